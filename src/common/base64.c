/* Standard base64, as the etcd v3 gateway uses for keys and values. */
#include <stdlib.h>

#include <sodium.h>

#include "common.h"

char *
base64_encode(const void *data, size_t len)
{
	size_t n =
	    sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
	char *out;

	if ((out = malloc(n)) == NULL)
		return NULL;
	sodium_bin2base64(out, n, data, len, sodium_base64_VARIANT_ORIGINAL);
	return out;
}

int
base64_decode(const char *in, size_t inlen, char **out, size_t *outlen)
{
	size_t cap = inlen / 4 * 3 + 3, n = 0;
	const char *end = NULL;
	unsigned char *p;

	if ((p = malloc(cap + 1)) == NULL)
		return US_ENOMEM;
	if (sodium_base642bin(p, cap, in, inlen, NULL, &n, &end,
		sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    end != in + inlen) {
		free(p);
		return US_EPROTO;
	}
	p[n] = '\0';
	*out = (char *)p;
	*outlen = n;
	return 0;
}
