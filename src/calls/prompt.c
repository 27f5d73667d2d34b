/*
 * Prompts: what a media port plays to its caller instead of the echo.
 * A WAV file of G.711 mu-law (format 7), 8000 Hz, mono, 8 bits, or a raw
 * PCMU file (any other name): the RTP payload as it goes on the wire.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "calls.h"

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static uint16_t
le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static int
wav_parse(const uint8_t *buf, size_t len, const uint8_t **data, size_t *n,
    char *err, size_t errlen)
{
	size_t off = 12;
	bool fmt = false;

	if (len < 12 || memcmp(buf + 8, "WAVE", 4) != 0) {
		snprintf(err, errlen, "a RIFF file but not WAVE");
		return US_EINVAL;
	}
	while (off + 8 <= len) {
		const uint8_t *ck = buf + off;
		size_t size = le32(ck + 4);

		if (size > len - off - 8) {
			/* a data chunk cut short: take what is there */
			if (memcmp(ck, "data", 4) != 0) {
				snprintf(err, errlen,
				    "chunk '%.4s' at byte %zu runs past the "
				    "end of the file",
				    (const char *)ck, off);
				return US_EINVAL;
			}
			size = len - off - 8;
		}
		if (memcmp(ck, "fmt ", 4) == 0) {
			unsigned format, channels, bits;
			uint32_t rate;

			if (size < 16) {
				snprintf(err, errlen, "fmt chunk too short");
				return US_EINVAL;
			}
			format = le16(ck + 8);
			channels = le16(ck + 10);
			rate = le32(ck + 12);
			bits = le16(ck + 22);
			if (format != 7 || channels != 1 || rate != 8000 ||
			    bits != 8) {
				snprintf(err, errlen,
				    "format %u, %u channel(s), %u Hz, %u bits: "
				    "a prompt must be mu-law (7), mono, 8000 "
				    "Hz, 8 bits (sox IN -r 8000 -c 1 -e "
				    "mu-law OUT.wav)",
				    format, channels, (unsigned)rate, bits);
				return US_EINVAL;
			}
			fmt = true;
		} else if (memcmp(ck, "data", 4) == 0) {
			if (!fmt) {
				snprintf(err, errlen,
				    "data chunk before the fmt chunk");
				return US_EINVAL;
			}
			*data = ck + 8;
			*n = size;
			return 0;
		}
		off += 8 + size + (size & 1);
	}
	snprintf(err, errlen, fmt ? "no data chunk" : "no fmt chunk");
	return US_EINVAL;
}

int
prompt_parse(const uint8_t *buf, size_t len, bool wav, struct prompt *out,
    char *err, size_t errlen)
{
	const uint8_t *data = buf;
	size_t n = len;
	int rc;

	memset(out, 0, sizeof(*out));
	if (len > PROMPT_MAX) {
		snprintf(err, errlen, "%zu bytes; a prompt is at most %u", len,
		    PROMPT_MAX);
		return US_ETOOBIG;
	}
	if (wav) {
		if (len < 4 || memcmp(buf, "RIFF", 4) != 0) {
			snprintf(
			    err, errlen, "not a WAV file (no RIFF header)");
			return US_EINVAL;
		}
		if ((rc = wav_parse(buf, len, &data, &n, err, errlen)) != 0)
			return rc;
	}
	if (n < PROMPT_FRAME) {
		snprintf(err, errlen,
		    "%zu bytes of audio; a prompt needs at least %u (20 ms)", n,
		    PROMPT_FRAME);
		return US_EINVAL;
	}
	if ((out->pcmu = malloc(n)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return US_ENOMEM;
	}
	memcpy(out->pcmu, data, n);
	out->len = n;
	return 0;
}

int
prompt_load(const char *path, struct prompt *out, char *err, size_t errlen)
{
	const char *dot = strrchr(path, '.');
	bool wav = dot && strcasecmp(dot, ".wav") == 0;
	uint8_t *buf;
	size_t n;
	FILE *f;
	int rc;
	char why[200];

	memset(out, 0, sizeof(*out));
	if ((f = fopen(path, "rb")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return US_EIO;
	}
	if ((buf = malloc(PROMPT_MAX + 1)) == NULL) {
		fclose(f);
		snprintf(err, errlen, "out of memory");
		return US_ENOMEM;
	}
	n = fread(buf, 1, PROMPT_MAX + 1, f);
	rc = ferror(f) ? US_EIO : 0;
	fclose(f);
	if (rc == 0)
		rc = prompt_parse(buf, n, wav, out, why, sizeof(why));
	else
		snprintf(why, sizeof(why), "read error");
	if (rc != 0)
		snprintf(err, errlen, "%s: %s", path, why);
	free(buf);
	return rc;
}

void
prompt_free(struct prompt *p)
{
	free(p->pcmu);
	memset(p, 0, sizeof(*p));
}

char *
prompt_path(const struct config *cfg, const struct config_server *s)
{
	return config_file_path(cfg, s->prompt);
}
