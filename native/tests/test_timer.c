/*
 * test_timer.c - the pacing timer (timer.c) against the real kernel: it fires at its time and
 * never before, a past time fires at once, re-arming replaces the time, a bad fd is -EBADF.
 */
#define _GNU_SOURCE
#include "timer.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#define MS (1000 * 1000LL)

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Whether `fd` becomes readable within `ms` milliseconds; its expiry count is read. */
static int fires_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) != 1)
        return 0;
    uint64_t expirations = 0;
    return read(fd, &expirations, sizeof expirations) == sizeof expirations && expirations == 1;
}

static int test_fires_at_its_time_not_before(void)
{
    int fd = pace_timer_open();
    CHECK(fd >= 0);
    int64_t due = now_ns() + 3 * MS;
    CHECK_RC(pace_timer_arm(fd, due), 0);
    CHECK(fires_within(fd, 5000));
    CHECK(now_ns() >= due);
    close(fd);
    return T_OK;
}

static int test_a_past_time_fires_at_once(void)
{
    int fd = pace_timer_open();
    CHECK(fd >= 0);
    CHECK_RC(pace_timer_arm(fd, now_ns() - 10 * MS), 0);
    CHECK(fires_within(fd, 1000));
    CHECK_RC(pace_timer_arm(fd, 0), 0); /* the clock's start: long past, not "disarm" */
    CHECK(fires_within(fd, 1000));
    close(fd);
    return T_OK;
}

static int test_arming_again_replaces_the_time(void)
{
    int fd = pace_timer_open();
    CHECK(fd >= 0);
    CHECK_RC(pace_timer_arm(fd, now_ns() + 60 * 1000 * MS), 0);
    CHECK(!fires_within(fd, 20)); /* a minute away, and non-blocking: nothing yet */
    CHECK_RC(pace_timer_arm(fd, now_ns() + 1 * MS), 0);
    CHECK(fires_within(fd, 5000));
    close(fd);
    return T_OK;
}

static int test_a_bad_descriptor_is_an_error(void)
{
    CHECK_RC(pace_timer_arm(-1, now_ns()), -EBADF);
    return T_OK;
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        {"fires_at_its_time_not_before", test_fires_at_its_time_not_before},
        {"a_past_time_fires_at_once", test_a_past_time_fires_at_once},
        {"arming_again_replaces_the_time", test_arming_again_replaces_the_time},
        {"a_bad_descriptor_is_an_error", test_a_bad_descriptor_is_an_error},
    };
    return run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
}
