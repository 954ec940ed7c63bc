/*
 * helpers.h - what the standalone native tests share (liburing's test/helpers.h, in small).
 * A test returns T_OK, T_FAIL or T_SKIP; a main runs its tests and exits with one of them
 * (77: skipped, as automake and liburing count it).
 */
#ifndef FAASD_TEST_HELPERS_H
#define FAASD_TEST_HELPERS_H

#include <stdio.h>
#include <string.h>

#define T_OK 0
#define T_FAIL 1
#define T_SKIP 77

/* Fail the current test (return T_FAIL) unless `cond` holds. */
#define CHECK(cond)                                                                             \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);         \
            return T_FAIL;                                                                      \
        }                                                                                       \
    } while (0)

/* Fail the current test unless `expr` returns `want`; a -errno is shown with its message. */
#define CHECK_RC(expr, want)                                                                    \
    do {                                                                                        \
        long long rc_ = (long long)(expr);                                                      \
        if (rc_ != (long long)(want)) {                                                         \
            fprintf(stderr, "  %s:%d: %s returned %lld (%s), expected %lld\n", __FILE__,        \
                    __LINE__, #expr, rc_, rc_ < 0 ? strerror((int)-rc_) : "-",                  \
                    (long long)(want));                                                         \
            return T_FAIL;                                                                      \
        }                                                                                       \
    } while (0)

#endif /* FAASD_TEST_HELPERS_H */
