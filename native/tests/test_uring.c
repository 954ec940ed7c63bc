/*
 * test_uring.c - the doorbell ring (uring.c) against the real kernel: reads that consume
 * eventfd doorbells, cancellation, a full SQ, CQ overflow, the ring fd's readiness, SQPOLL.
 * Exits 77 (skipped) where io_uring is not available, except under CI=true.
 */
#define _GNU_SOURCE
#include "uring.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#define MS (1000 * 1000LL)

/* T_SKIP when the kernel has no usable io_uring here, but not under CI=true. */
static int unavailable(void)
{
    int rc = uring_probe(0);
    if (rc == 0)
        return 0;
    const char *ci = getenv("CI");
    fprintf(stderr, "  io_uring unavailable: %s\n", strerror(-rc));
    return ci && strcmp(ci, "true") == 0 ? T_FAIL : T_SKIP;
}

/* Return from the test unless io_uring is usable here. */
#define REQUIRE_URING()                                                                         \
    do {                                                                                        \
        int skip_ = unavailable();                                                              \
        if (skip_)                                                                              \
            return skip_;                                                                       \
    } while (0)

/* A doorbell as shm regions make them: a non-blocking eventfd, rung `count` times already. */
static int doorbell(unsigned count)
{
    return eventfd(count, EFD_NONBLOCK | EFD_CLOEXEC);
}

static int ring_readable(struct uring *r)
{
    struct pollfd p = {.fd = uring_fd(r), .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* Reap `want` completions, waiting up to a second for each batch. */
static int reap_all(struct uring *r, struct uring_cqe *out, int want)
{
    int got = 0;
    while (got < want) {
        int n = uring_reap(r, out + got, (unsigned)(want - got));
        if (n < 0)
            return n;
        got += n;
        if (got < want && uring_wait(r, 1, 1000 * MS) < 0)
            break;
    }
    return got;
}

static int reap_all_doorbells(struct uring *r, struct uring_doorbell **out, int want)
{
    int got = 0;
    for (int tries = 0; got < want && tries < 100; tries++) {
        int n = uring_doorbell_reap(r, out + got, (unsigned)(want - got));
        if (n < 0)
            return n;
        got += n;
        if (got < want)
            uring_wait(r, 1, 10 * MS);
    }
    return got;
}

static int test_probe(void)
{
    return unavailable() == T_FAIL ? T_FAIL : T_OK;
}

/* Many doorbells, a few rung: one completion each, and the completion took the count. */
static int test_read_consumes_doorbells(void)
{
    REQUIRE_URING();
    enum { N = 64, RUNG = 10 };
    struct uring *r;
    CHECK_RC(uring_open(32, 0, 0, &r), 0); /* fewer SQEs than reads: queueing submits */
    int efd[N];
    uint64_t buf[N];
    for (int i = 0; i < N; i++) {
        efd[i] = doorbell(0);
        CHECK(efd[i] >= 0);
        CHECK_RC(uring_queue_read(r, efd[i], &buf[i], sizeof(buf[i]), (uint64_t)i + 1), 0);
    }
    CHECK(uring_submit(r) >= 0);
    CHECK_RC(uring_wait(r, 1, 20 * MS), -ETIME); /* nothing rang: nothing completes */
    CHECK(!ring_readable(r));
    for (int i = 0; i < RUNG; i++) {
        uint64_t v = (uint64_t)i + 5;
        CHECK_RC(write(efd[i * 3], &v, sizeof(v)), sizeof(v));
    }
    CHECK(ring_readable(r));
    struct uring_cqe cqe[RUNG];
    CHECK_RC(reap_all(r, cqe, RUNG), RUNG);
    for (int i = 0; i < RUNG; i++) {
        uint64_t slot = cqe[i].user_data - 1;
        CHECK(slot % 3 == 0 && slot / 3 < RUNG);
        CHECK_RC(cqe[i].res, sizeof(uint64_t));
        CHECK(buf[slot] == slot / 3 + 5);
        uint64_t left;
        CHECK_RC(read(efd[slot], &left, sizeof(left)), -1); /* already consumed */
        CHECK(errno == EAGAIN);
    }
    CHECK(!ring_readable(r));
    struct uring_stats st;
    uring_get_stats(r, &st);
    CHECK(st.queued == N && st.submitted == N && st.completed == RUNG);
    uring_close(r); /* with 54 reads in flight */
    for (int i = 0; i < N; i++)
        close(efd[i]);
    return T_OK;
}

/* A doorbell rung before its read is queued: the read completes at once. */
static int test_rung_before_read(void)
{
    REQUIRE_URING();
    struct uring *r;
    CHECK_RC(uring_open(4, 0, 0, &r), 0);
    int efd = doorbell(0);
    uint64_t one = 1, two = 2, buf = 0;
    CHECK_RC(write(efd, &one, sizeof(one)), sizeof(one));
    CHECK_RC(write(efd, &two, sizeof(two)), sizeof(two));
    CHECK_RC(uring_queue_read(r, efd, &buf, sizeof(buf), 7), 0);
    CHECK_RC(uring_wait(r, 1, 1000 * MS), 0);
    struct uring_cqe cqe;
    CHECK_RC(uring_reap(r, &cqe, 1), 1);
    CHECK(cqe.user_data == 7 && cqe.res == 8 && buf == 3);
    uring_close(r);
    close(efd);
    return T_OK;
}

static int test_cancel(void)
{
    REQUIRE_URING();
    struct uring *r;
    CHECK_RC(uring_open(8, 0, 0, &r), 0);
    int a = doorbell(0), b = doorbell(0);
    uint64_t ba, bb;
    CHECK_RC(uring_queue_read(r, a, &ba, 8, 1), 0);
    CHECK_RC(uring_queue_read(r, b, &bb, 8, 2), 0);
    CHECK_RC(uring_submit(r), 2);
    CHECK_RC(uring_queue_cancel(r, 1, 0), 0);
    struct uring_cqe cqe[4];
    CHECK_RC(reap_all(r, cqe, 2), 2); /* the read's -ECANCELED and the cancel's own 0 */
    for (int i = 0; i < 2; i++) {
        if (cqe[i].user_data == 1)
            CHECK_RC(cqe[i].res, -ECANCELED);
        else
            CHECK(cqe[i].user_data == 0 && cqe[i].res == 0);
    }
    /* b still waits, and a doorbell on a no longer reaches the ring */
    uint64_t one = 1;
    CHECK_RC(write(a, &one, 8), 8);
    CHECK_RC(uring_wait(r, 1, 20 * MS), -ETIME);
    CHECK_RC(uring_queue_cancel(r, 0, 1), 0);
    CHECK_RC(reap_all(r, cqe, 2), 2);
    for (int i = 0; i < 2; i++) {
        if (cqe[i].user_data == 2)
            CHECK_RC(cqe[i].res, -ECANCELED);
        else
            CHECK(cqe[i].user_data == 0 && cqe[i].res == 1); /* it cancelled one request */
    }
    uring_close(r);
    close(a);
    close(b);
    return T_OK;
}

/* A synchronous cancel says whether the read had consumed the doorbell, even when the read
 * was still in the SQ. */
static int test_cancel_sync(void)
{
    REQUIRE_URING();
    struct uring *r;
    CHECK_RC(uring_open(8, 0, 0, &r), 0);
    int efd = doorbell(0);
    uint64_t buf = 0, v = 6;
    CHECK_RC(uring_queue_read(r, efd, &buf, 8, 1), 0); /* queued, not submitted */
    CHECK_RC(uring_cancel_sync(r, 1), 0);
    struct uring_cqe cqe;
    CHECK_RC(reap_all(r, &cqe, 1), 1);
    CHECK(cqe.user_data == 1 && cqe.res == -ECANCELED);
    CHECK_RC(write(efd, &v, 8), 8);
    CHECK_RC(uring_queue_read(r, efd, &buf, 8, 2), 0); /* completes as it is submitted */
    CHECK_RC(uring_cancel_sync(r, 2), -ENOENT);
    CHECK(buf == 6);
    CHECK_RC(reap_all(r, &cqe, 1), 1);
    CHECK(cqe.user_data == 2 && cqe.res == 8);
    uring_close(r);
    close(efd);
    return T_OK;
}

/* The doorbell API: reaping re-arms, a failed read disarms, disarm hands back a count. */
static int test_doorbells(void)
{
    REQUIRE_URING();
    struct uring *r;
    CHECK_RC(uring_open(4, 0, 0, &r), 0);
    struct uring_doorbell db[3];
    memset(db, 0, sizeof(db));
    for (int i = 0; i < 3; i++) {
        db[i].fd = doorbell(0);
        db[i].id = (uint32_t)i;
        CHECK_RC(uring_doorbell_arm(r, &db[i]), 0);
    }
    CHECK(uring_submit(r) >= 0);
    uint64_t v = 4;
    for (int round = 0; round < 3; round++) { /* re-armed each time */
        CHECK_RC(write(db[1].fd, &v, 8), 8);
        CHECK_RC(uring_wait(r, 1, 1000 * MS), 0);
        struct uring_doorbell *out[4];
        CHECK_RC(uring_doorbell_reap(r, out, 4), 1);
        CHECK(out[0] == &db[1] && db[1].res == 8 && db[1].armed);
    }
    close(db[2].fd); /* a read survives its fd's close (it holds the file) */
    CHECK_RC(write(db[0].fd, &v, 8), 8);
    CHECK_RC(uring_doorbell_disarm(r, &db[0]), -ENOENT); /* it had taken the count */
    CHECK(db[0].count == 4 && !db[0].armed);
    CHECK_RC(uring_doorbell_disarm(r, &db[1]), 0);
    struct uring_doorbell *out[4];
    CHECK_RC(reap_all_doorbells(r, out, 2), 2); /* db[0]'s read, db[1]'s -ECANCELED */
    for (int i = 0; i < 2; i++)
        CHECK(out[i] == &db[0] ? db[0].res == 8 : (out[i] == &db[1] && db[1].res == -ECANCELED));
    CHECK_RC(uring_wait(r, 1, 20 * MS), -ETIME); /* not re-armed */
    uring_close(r);
    close(db[0].fd);
    close(db[1].fd);
    return T_OK;
}

/* More completions at once than the CQ holds: none is lost (IORING_FEAT_NODROP). */
static int test_cq_overflow(void)
{
    REQUIRE_URING();
    enum { N = 40 };
    struct uring *r;
    CHECK_RC(uring_open(4, 0, 0, &r), 0); /* CQ of 8 */
    int efd[N];
    uint64_t buf[N];
    for (int i = 0; i < N; i++) {
        efd[i] = doorbell(1); /* rung already */
        CHECK_RC(uring_queue_read(r, efd[i], &buf[i], 8, (uint64_t)i + 1), 0);
    }
    CHECK(uring_submit(r) >= 0);
    struct uring_cqe cqe[N];
    int got = 0;
    for (int round = 0; round < 100 && got < N; round++) {
        int n = uring_reap(r, cqe + got, N - got);
        CHECK(n >= 0);
        got += n;
        CHECK(uring_submit(r) >= 0); /* flushes the overflow into the freed room */
    }
    CHECK_RC(got, N);
    for (int i = 0; i < N; i++)
        CHECK(cqe[i].res == 8 && buf[cqe[i].user_data - 1] == 1);
    uring_close(r);
    for (int i = 0; i < N; i++)
        close(efd[i]);
    return T_OK;
}

static int test_bad_fd(void)
{
    REQUIRE_URING();
    struct uring *r;
    CHECK_RC(uring_open(4, 0, 0, &r), 0);
    int efd = doorbell(0);
    close(efd);
    uint64_t buf;
    CHECK_RC(uring_queue_read(r, efd, &buf, 8, 9), 0);
    CHECK_RC(uring_wait(r, 1, 1000 * MS), 0);
    struct uring_cqe cqe;
    CHECK_RC(uring_reap(r, &cqe, 1), 1);
    CHECK(cqe.user_data == 9);
    CHECK_RC(cqe.res, -EBADF);
    CHECK_RC(uring_queue_read(r, -1, &buf, 8, 9), -EINVAL);
    uring_close(r);
    return T_OK;
}

static int test_bad_arguments(void)
{
    struct uring *r = (struct uring *)&r;
    CHECK_RC(uring_open(3, 0, 0, &r), -EINVAL);
    CHECK(r == NULL);
    CHECK_RC(uring_open(0, 0, 0, &r), -EINVAL);
    CHECK_RC(uring_open(8192, 0, 0, &r), -EINVAL);
    CHECK_RC(uring_open(8, 0x80, 0, &r), -EINVAL);
    uring_close(NULL);
    return T_OK;
}

/* SQPOLL: a sleeping SQ thread is woken by uring_submit, and the read still completes. */
static int test_sqpoll(void)
{
    REQUIRE_URING();
    struct uring *r;
    int rc = uring_open(8, URING_SQPOLL, 1, &r);
    if (rc == -EPERM) { /* before 5.11 SQPOLL needed CAP_SYS_ADMIN */
        fprintf(stderr, "  SQPOLL not permitted\n");
        return T_SKIP;
    }
    CHECK_RC(rc, 0);
    struct timespec nap = {0, 20 * MS};
    nanosleep(&nap, NULL); /* idle 1 ms: the thread is asleep now */
    int efd = doorbell(0);
    uint64_t buf = 0, v = 3;
    CHECK_RC(uring_queue_read(r, efd, &buf, 8, 4), 0);
    CHECK_RC(uring_submit(r), 1);
    struct uring_stats st;
    uring_get_stats(r, &st);
    CHECK(st.wakeups == 1);
    CHECK_RC(write(efd, &v, 8), 8);
    struct uring_cqe cqe;
    CHECK_RC(reap_all(r, &cqe, 1), 1);
    CHECK(cqe.user_data == 4 && cqe.res == 8 && buf == 3);
    uring_close(r);
    close(efd);
    return T_OK;
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        {"probe", test_probe},
        {"read_consumes_doorbells", test_read_consumes_doorbells},
        {"rung_before_read", test_rung_before_read},
        {"cancel", test_cancel},
        {"cancel_sync", test_cancel_sync},
        {"doorbells", test_doorbells},
        {"cq_overflow", test_cq_overflow},
        {"bad_fd", test_bad_fd},
        {"bad_arguments", test_bad_arguments},
        {"sqpoll", test_sqpoll},
    };
    return run_tests(tests, sizeof(tests) / sizeof(tests[0]), argc, argv);
}
