/* The unit test harness: one runner, every test listed in test-list.h. */
#ifndef US_TEST_H
#define US_TEST_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST(name) void test_##name(void)

/* every test's prototype, from the one list */
#define X(name) void test_##name(void);
#include "test-list.h"
#undef X

#define ASSERT(cond)                                                           \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: assertion failed: %s\n",       \
			    __FILE__, __LINE__, #cond);                        \
			exit(1);                                               \
		}                                                              \
	} while (0)

#define ASSERT_INT(a, b)                                                       \
	do {                                                                   \
		long long a_ = (long long)(a), b_ = (long long)(b);            \
		if (a_ != b_) {                                                \
			fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n",  \
			    __FILE__, __LINE__, #a, a_, b_);                   \
			exit(1);                                               \
		}                                                              \
	} while (0)

#define ASSERT_STR(a, b)                                                       \
	do {                                                                   \
		const char *a_ = (a), *b_ = (b);                               \
		if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {         \
			fprintf(stderr,                                        \
			    "%s:%d: %s is \"%s\", expected \"%s\"\n",          \
			    __FILE__, __LINE__, #a, a_ ? a_ : "(null)",        \
			    b_ ? b_ : "(null)");                               \
			exit(1);                                               \
		}                                                              \
	} while (0)

#endif
