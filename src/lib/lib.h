/* libunderstudy's insides, shared by desk.c and nats.c. */
#ifndef US_LIB_H
#define US_LIB_H

#include <curl/curl.h>
#include <jansson.h>
#include <nats/nats.h>
#include <sqlite3.h>

#include "common/common.h"
#include "understudy/understudy.h"

#define US_DESK_VERSION "0.1.0"
#define LIB_SERVERS_MAX 16
#define LIB_QUEUE_MAX 4096
#define LIB_NATS_MAX 8
#define LIB_CHANNELS_MAX 64

/* An answer's body as it arrives, up to a cap. */
struct lib_body {
	char *data;
	size_t len;
	bool over;
};

struct lib_channel {
	char name[64];
	char subject[200];
	natsSubscription *sub;
};

struct us_desk {
	char desk_id[65];
	char version[32];
	char *servers[LIB_SERVERS_MAX];
	size_t n_servers;
	int timeout_ms, backoff_base, backoff_max;
	char *ca_file; /* verifies https:// servers; NULL: the system's */
	sqlite3 *db;
	CURL *curl; /* the blocking requests (login, resume, join...) */
	/*
	 * The held long poll for the session's events, driven by us_poll
	 * without blocking: its own connection, in a multi handle.
	 */
	CURLM *multi;
	CURL *ev_curl;
	bool ev_busy; /* a request is out */
	struct curl_slist *ev_hdrs;
	struct lib_body ev_body;
	char ev_err[CURL_ERROR_SIZE];
	uint64_t ev_requests; /* sent so far (for tests and benches) */
	char why[512]; /* the last failure, in words */

	/* the session */
	char user[64];
	char *password; /* in memory only: a new login when it expired */
	char token[80];
	char server[64];
	char server_url[256];
	char cluster[64];
	bool logged_in, online;
	int64_t last_event;
	unsigned server_fails;
	uint64_t next_server, next_events;
	uint64_t retry_after_ms; /* the last answer's 503 Retry-After; 0 */

	/* the data plane */
	char *nats_urls[LIB_NATS_MAX];
	int n_nats;
	char *nats_auth; /* the session's "messaging_auth", JSON, or NULL */
	char nats_error[256]; /* the last connect failure told */
	natsConnection *nc;
	jsCtx *js;
	bool nats_ok;
	bool nats_was_ok;
	bool resubscribe;
	unsigned nats_fails;
	uint64_t next_nats;
	struct lib_channel subs[LIB_CHANNELS_MAX];
	size_t n_subs;

	/* events for the program: a ring that grows up to LIB_QUEUE_MAX */
	struct us_event *q;
	size_t q_cap, q_head, q_len;
};

/* desk.c */
uint64_t lib_backoff_ms(const us_desk *d, unsigned fails);
int lib_sql(us_desk *d, const char *sql);
sqlite3_stmt *lib_prep(us_desk *d, const char *sql);
char *lib_kv_get(us_desk *d, const char *k);
int lib_kv_put(us_desk *d, const char *k, const char *v);
void lib_emit(us_desk *d, enum us_event_type type, const char *kind,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
struct us_event *lib_emit_slot(us_desk *d);

/*
 * One request to a server: 0 with the answer in *out; US_EUNAVAIL when
 * it did not answer (or cannot serve now: try another); otherwise the
 * error it named, with its answer in *out. d->why says why in words.
 */
int lib_http(us_desk *d, const char *base, const char *method, const char *path,
    const char *body, bool auth, json_t **out);

/* nats.c */

/* The session's messaging URLs changed (or were loaded). */
void lib_nats_configure(us_desk *d);

/* The joined channels changed: subscriptions follow at the next work. */
void lib_nats_channels_changed(us_desk *d);

/* A channel is being joined: its delivery starts after what is there. */
void lib_nats_mark_start(us_desk *d, const char *channel);

/* Connect, subscribe, flush the outbox, deliver what came. */
void lib_nats_work(us_desk *d);

/*
 * Wait up to ms for something to do: the held events request's socket
 * when one is out, else a sleep.
 */
void lib_nats_wait(us_desk *d, int ms);

void lib_nats_close(us_desk *d);

#endif
