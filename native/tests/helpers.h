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

/* One named test of a standalone test program. */
struct test {
    const char *name;
    int (*run)(void);
};

/*
 * Run the tests named on the command line (all when none is named), print one line each, and
 * return what main should: T_FAIL if any failed or a name is unknown, T_SKIP if all skipped.
 */
static inline int run_tests(const struct test *tests, size_t count, int argc, char **argv)
{
    int failed = 0, skipped = 0, ran = 0;
    for (size_t i = 0; i < count; i++) {
        int wanted = argc < 2;
        for (int a = 1; a < argc; a++)
            wanted |= strcmp(argv[a], tests[i].name) == 0;
        if (!wanted)
            continue;
        ran++;
        int rc = tests[i].run();
        fprintf(stderr, "%s %s\n", rc == T_OK ? "ok  " : rc == T_SKIP ? "skip" : "FAIL",
                tests[i].name);
        failed += rc == T_FAIL;
        skipped += rc == T_SKIP;
    }
    if (!ran) {
        fprintf(stderr, "no such test\n");
        return T_FAIL;
    }
    if (failed)
        return T_FAIL;
    return skipped == ran ? T_SKIP : T_OK;
}

#endif /* FAASD_TEST_HELPERS_H */
