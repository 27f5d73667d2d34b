/* Names and messages of the shared error codes, from the one X-macro. */
#include "common.h"

const char *
us_err_name(int err)
{
	switch (err) {
#define ERR_NAME(name, code, msg)                                              \
	case code:                                                             \
		return #name;
		US_ERRNO_MAP(ERR_NAME)
#undef ERR_NAME
	case 0:
		return "OK";
	}
	return "EUNKNOWN";
}

const char *
us_strerror(int err)
{
	switch (err) {
#define ERR_MSG(name, code, msg)                                               \
	case code:                                                             \
		return msg;
		US_ERRNO_MAP(ERR_MSG)
#undef ERR_MSG
	case 0:
		return "success";
	}
	return "unknown error";
}
