/*
 * timer.h - a timerfd on CLOCK_MONOTONIC, for waits finer than an event loop's timers.
 *
 * uvloop (libuv) keeps timers in whole milliseconds and truncates: a sleep of less than 1 ms
 * fires at once, so a load generator that sleeps until each request's due time spins a core
 * at a few thousand requests a second. A timerfd armed at an absolute time wakes the loop's
 * epoll within tens of microseconds of it (the kernel's hrtimer slack), never before.
 *
 * CLOCK_MONOTONIC is the clock of Python's time.monotonic() on Linux, so due times computed
 * there arm the timer as they are. Both functions return -errno on failure, never set errno.
 */
#ifndef FAASD_TIMER_H
#define FAASD_TIMER_H

#include <stdint.h>

/* A new timerfd (non-blocking, close-on-exec), disarmed; its descriptor, or -errno. */
int pace_timer_open(void);

/* Arm `fd` to become readable at `at_ns` on CLOCK_MONOTONIC (one shot; a time already past
   fires at once). 0, or -errno. Reading the descriptor's 8 bytes clears it. */
int pace_timer_arm(int fd, int64_t at_ns);

#endif
