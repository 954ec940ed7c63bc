/* timer.c - see timer.h. */
#define _GNU_SOURCE
#include "timer.h"

#include <errno.h>
#include <sys/timerfd.h>
#include <time.h>

int pace_timer_open(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int pace_timer_arm(int fd, int64_t at_ns)
{
    /* it_value zero would disarm the timer: a time at or before the clock's start fires at its
       first nanosecond instead, which has long passed. */
    if (at_ns < 1)
        at_ns = 1;
    struct itimerspec spec = {
        .it_interval = {0, 0},
        .it_value = {.tv_sec = at_ns / 1000000000, .tv_nsec = at_ns % 1000000000},
    };
    return timerfd_settime(fd, TFD_TIMER_ABSTIME, &spec, NULL) < 0 ? -errno : 0;
}
