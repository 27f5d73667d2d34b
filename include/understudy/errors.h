/*
 * understudy error codes: one list shared by the daemon, the client
 * library, the HTTP API's JSON error bodies and the CLI's messages.
 *
 * Every code is negative; 0 means success. The name ("ENOTOWNER") is
 * stable and is what scripts should match on; the message is for people.
 */
#ifndef UNDERSTUDY_ERRORS_H
#define UNDERSTUDY_ERRORS_H

#define US_ERRNO_MAP(XX)                                                       \
	XX(EINVAL, -1, "invalid argument")                                     \
	XX(ENOMEM, -2, "out of memory")                                        \
	XX(ETIMEDOUT, -3, "timed out")                                         \
	XX(EUNAVAIL, -4, "no coordination store member answered")              \
	XX(EPROTO, -5, "malformed answer from a peer")                         \
	XX(ETOOBIG, -6, "input over its size limit")                           \
	XX(ENOTFOUND, -7, "not found")                                         \
	XX(EMETHOD, -8, "method not allowed")                                  \
	XX(ECOMPACTED, -9, "revision compacted")                               \
	XX(ELEASELOST, -10, "lease lost")                                      \
	XX(ECANCELED, -11, "canceled")                                         \
	XX(EETCD, -12, "the coordination store refused the request")           \
	XX(ENOTOWNER, -13, "this server does not own the post")                \
	XX(ENOLICENSE, -14, "no license free")                                 \
	XX(EBUSY, -15, "no media port free")                                   \
	XX(EOFFLINE, -16, "offline")                                           \
	XX(EUNAUTHORIZED, -17, "missing or wrong credentials")                 \
	XX(ECONFIG, -18, "invalid configuration")                              \
	XX(EIO, -19, "input/output error")                                     \
	XX(EFENCED, -20, "this server has fenced itself")                      \
	XX(EINTERNAL, -21, "internal error")                                   \
	XX(EVERSION, -22, "desk version not accepted")                         \
	XX(EEXPIRED, -23, "session expired: log in again")                     \
	XX(ENOTALLOWED, -24, "not allowed for this user")                      \
	XX(ELIMITED, -25, "too many failed attempts: wait and try again")      \
	XX(ECONFLICT, -26, "changed meanwhile by someone else")

enum us_errno {
#define US_ERRNO_ENUM(name, code, msg) US_##name = (code),
	US_ERRNO_MAP(US_ERRNO_ENUM)
#undef US_ERRNO_ENUM
};

/* The stable name of an error code ("ENOTOWNER"), or "EUNKNOWN". */
const char *us_err_name(int err);

/* A short human message for an error code. Never NULL. */
const char *us_strerror(int err);

#endif
