/*
 * Standalone tests of the shared-memory channel (native/shm.c), in liburing's manner: each
 * test returns 0 on success, 1 on failure, 77 (T_SKIP) if the kernel lacks what it needs.
 * `make test-native` builds this with AddressSanitizer and UndefinedBehaviorSanitizer.
 *
 *   test_shm            run every test
 *   test_shm NAME...    run the named ones
 */
#define _GNU_SOURCE
#include "shm.h"

#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A deterministic byte pattern, so a receiver can check a record it did not see sent. */
static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < len; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t n = len - i < 8 ? len - i : 8;
        memcpy(buf + i, &x, n);
    }
}

static int matches(const uint8_t *buf, size_t len, uint64_t seed)
{
    uint8_t *want = malloc(len ? len : 1);
    fill(want, len, seed);
    int ok = memcmp(buf, want, len) == 0;
    free(want);
    return ok;
}

/* A worker and a sandbox endpoint over one region, in this process. The worker endpoint has an
 * eventfd doorbell, the sandbox a futex word, as in faasd-py. */
struct pair {
    int memfd, efd;
    struct shm_endpoint *worker, *sandbox;
};

static int pair_open(struct pair *p, uint32_t slots, uint32_t slot_size, uint64_t arena)
{
    struct shm_geometry g = {slots, slot_size, arena};
    p->memfd = shm_create(&g);
    if (p->memfd < 0)
        return p->memfd;
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0)
        return -errno;
    int rc = shm_attach(p->memfd, SHM_WORKER, p->efd, -1, &p->worker);
    if (rc)
        return rc;
    return shm_attach(p->memfd, SHM_SANDBOX, -1, p->efd, &p->sandbox);
}

static void pair_close(struct pair *p)
{
    shm_detach(p->worker);
    shm_detach(p->sandbox);
    close(p->memfd);
    close(p->efd);
}

/* Receive one record on `ep` and check its size, user word and pattern. */
static int expect(struct shm_endpoint *ep, size_t len, uint64_t seed)
{
    struct shm_msg m;
    CHECK_RC(shm_peek(ep, &m), 0);
    CHECK(m.len == len);
    CHECK(m.user == (uint32_t)seed);
    CHECK(matches(m.data, len, seed));
    CHECK_RC(shm_consume(ep), 0);
    return T_OK;
}

static int send_pattern(struct shm_endpoint *ep, size_t len, uint64_t seed)
{
    uint8_t *buf = malloc(len ? len : 1);
    fill(buf, len, seed);
    /* Split in two parts, as Python sends a header and a body. */
    size_t split = len / 3;
    int rc = shm_send(ep, buf, split, buf + split, len - split, (uint32_t)seed);
    free(buf);
    return rc;
}

/* --- tests ----------------------------------------------------------------------------------- */

static int test_geometry(void)
{
    struct shm_geometry bad[] = {
        {0, 1024, 4096},   {3, 1024, 4096},       {1, 1024, 4096},
        {64, 100, 4096},   {64, 64, 4096},        {64, 1024, 100},
        {131072, 128, 0},  {64, 1024, SHM_MAX_ARENA + 64},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_RC(shm_region_size(&bad[i]), -EINVAL);
        CHECK_RC(shm_create(&bad[i]), -EINVAL);
    }
    struct shm_geometry ok = {64, 1024, 1 << 20};
    int64_t size = shm_region_size(&ok);
    CHECK(size >= 4096 + 2 * 64 * 1024 + 2 * (1 << 20));
    CHECK(size % 4096 == 0);
    return T_OK;
}

static int test_attach_validates(void)
{
    struct shm_geometry g = {8, 256, 4096};
    int fd = shm_create(&g);
    if (fd == -ENOSYS)
        return T_SKIP;
    CHECK(fd >= 0);
    struct shm_endpoint *ep;
    CHECK_RC(shm_attach(fd, 2, -1, -1, &ep), -EINVAL);
    int blocking = eventfd(0, 0);
    CHECK_RC(shm_attach(fd, SHM_WORKER, blocking, -1, &ep), -EINVAL); /* must be non-blocking */
    close(blocking);
    /* Sealed: the file cannot shrink or grow under a mapping. */
    CHECK(ftruncate(fd, 4096) < 0 && errno == EPERM);
    /* A corrupt magic or version is refused. */
    uint32_t *words = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(words != MAP_FAILED);
    words[0] ^= 1;
    CHECK_RC(shm_attach(fd, SHM_WORKER, -1, -1, &ep), -EPROTO);
    words[0] ^= 1;
    words[1] = SHM_VERSION + 1;
    CHECK_RC(shm_attach(fd, SHM_WORKER, -1, -1, &ep), -EPROTONOSUPPORT);
    words[1] = SHM_VERSION;
    words[3] = 7; /* slot_count no longer a power of two */
    CHECK_RC(shm_attach(fd, SHM_WORKER, -1, -1, &ep), -EPROTO);
    words[3] = 8;
    CHECK_RC(shm_attach(fd, SHM_WORKER, -1, -1, &ep), 0);
    shm_detach(ep);
    munmap(words, 4096);
    close(fd);
    /* An unsealed file is refused: a sandbox could shrink it under the worker. */
    int plain = memfd_create("plain", MFD_CLOEXEC);
    CHECK(plain >= 0 && ftruncate(plain, 1 << 16) == 0);
    CHECK_RC(shm_attach(plain, SHM_WORKER, -1, -1, &ep), -EPERM);
    close(plain);
    return T_OK;
}

static int test_round_trip(void)
{
    struct pair p;
    CHECK_RC(pair_open(&p, 8, 256, 1 << 16), 0);
    uint32_t cap = shm_inline_capacity(p.worker);
    CHECK(cap == 256 - SHM_SLOT_HEADER);
    CHECK(shm_max_record(p.worker) == 1 << 16);
    struct shm_msg m;
    CHECK_RC(shm_peek(p.sandbox, &m), -EAGAIN);
    CHECK_RC(shm_consume(p.sandbox), -EINVAL);
    /* Sizes around the inline capacity and up to the whole arena, each way. */
    size_t sizes[] = {0, 1, 63, 64, cap - 1, cap, cap + 1, 4096, 60000, 1 << 16};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        CHECK_RC(send_pattern(p.worker, sizes[i], 100 + i), 0);
        /* Peek twice: the same record until consumed. */
        CHECK_RC(shm_peek(p.sandbox, &m), 0);
        CHECK(m.seq == i);
        CHECK_RC(shm_peek(p.sandbox, &m), 0);
        CHECK(m.seq == i);
        CHECK_RC(expect(p.sandbox, sizes[i], 100 + i), 0);
        CHECK_RC(send_pattern(p.sandbox, sizes[i], 200 + i), 0);
        CHECK_RC(expect(p.worker, sizes[i], 200 + i), 0);
    }
    CHECK_RC(send_pattern(p.worker, (1 << 16) + 1, 1), -EMSGSIZE);
    struct shm_stats st;
    shm_get_stats(p.worker, &st);
    CHECK(st.sent == 10 && st.received == 10 && st.sent_arena == 4);
    pair_close(&p);
    return T_OK;
}

static int test_full_ring(void)
{
    struct pair p;
    CHECK_RC(pair_open(&p, 4, 128, 0), 0);
    for (int i = 0; i < 4; i++)
        CHECK_RC(send_pattern(p.worker, 10, i), 0);
    CHECK_RC(send_pattern(p.worker, 10, 99), -EAGAIN);
    /* Parked for room, nothing changed: stays parked. */
    CHECK_RC(shm_park(p.worker, SHM_WAIT_TX), 0);
    CHECK_RC(expect(p.sandbox, 10, 0), 0);
    /* The consume freed a slot and rang the parked worker's eventfd. */
    uint64_t count = 0;
    CHECK(read(p.efd, &count, sizeof(count)) == sizeof(count) && count == 1);
    CHECK_RC(shm_clear_doorbell(p.worker), 0);
    CHECK_RC(shm_park(p.worker, SHM_WAIT_TX), 1);
    CHECK_RC(send_pattern(p.worker, 10, 4), 0);
    CHECK_RC(send_pattern(p.worker, 10, 5), -EAGAIN);
    for (int i = 1; i <= 4; i++)
        CHECK_RC(expect(p.sandbox, 10, i), 0);
    struct shm_msg m;
    CHECK_RC(shm_peek(p.sandbox, &m), -EAGAIN);
    /* No arena: anything above a slot is too big. */
    CHECK_RC(send_pattern(p.worker, 128 - SHM_SLOT_HEADER + 1, 1), -EMSGSIZE);
    pair_close(&p);
    return T_OK;
}

static int test_arena_wrap(void)
{
    struct pair p;
    const uint64_t A = 64 * 1024;
    CHECK_RC(pair_open(&p, 64, 128, A), 0);
    /* A 40 KiB record, then one of 30 KiB that must wait for the first to be freed, then
     * records whose sizes walk the arena's end over and over. */
    CHECK_RC(send_pattern(p.worker, 40000, 1), 0);
    CHECK_RC(send_pattern(p.worker, 30000, 2), -EAGAIN);
    CHECK_RC(shm_park(p.worker, SHM_WAIT_TX), 0);
    CHECK_RC(expect(p.sandbox, 40000, 1), 0);
    CHECK_RC(shm_park(p.worker, SHM_WAIT_TX), 1);
    CHECK_RC(send_pattern(p.worker, 30000, 2), 0);
    /* After a record that ends past the middle, a whole-arena record still fits once the
     * arena is empty (it starts at the next lap). */
    CHECK_RC(expect(p.sandbox, 30000, 2), 0);
    CHECK_RC(send_pattern(p.worker, A, 3), 0);
    CHECK_RC(send_pattern(p.worker, 100, 4), -EAGAIN);
    CHECK_RC(expect(p.sandbox, A, 3), 0);
    uint64_t seed = 10;
    size_t in_flight[64];
    uint64_t seeds[64];
    int n = 0, first = 0;
    for (int round = 0; round < 2000; round++) {
        size_t len = 200 + (size_t)(round * 7919) % 20000;
        int rc = send_pattern(p.worker, len, seed);
        if (rc == -EAGAIN) {
            CHECK(n > 0);
            CHECK_RC(expect(p.sandbox, in_flight[first % 64], seeds[first % 64]), 0);
            first++;
            n--;
            round--;
            continue;
        }
        CHECK_RC(rc, 0);
        in_flight[(first + n) % 64] = len;
        seeds[(first + n) % 64] = seed++;
        n++;
    }
    while (n--) {
        CHECK_RC(expect(p.sandbox, in_flight[first % 64], seeds[first % 64]), 0);
        first++;
    }
    struct shm_stats st;
    shm_get_stats(p.worker, &st);
    CHECK(st.full > 10); /* the arena, not the ring, was what filled up */
    pair_close(&p);
    return T_OK;
}

static int test_shutdown(void)
{
    struct pair p;
    CHECK_RC(pair_open(&p, 8, 256, 4096), 0);
    CHECK_RC(send_pattern(p.worker, 5, 1), 0);
    CHECK_RC(shm_shutdown(p.worker), 0);
    CHECK_RC(send_pattern(p.worker, 5, 2), -EPIPE);
    CHECK_RC(send_pattern(p.sandbox, 5, 2), -EPIPE);
    /* What was sent before the shutdown still arrives; then the end. */
    CHECK_RC(shm_wait(p.sandbox, SHM_WAIT_RX, 0, 0), 0);
    CHECK_RC(expect(p.sandbox, 5, 1), 0);
    struct shm_msg m;
    CHECK_RC(shm_peek(p.sandbox, &m), -EPIPE);
    CHECK_RC(shm_wait(p.sandbox, SHM_WAIT_RX, 0, -1), 0);
    pair_close(&p);
    return T_OK;
}

static int test_wait_timeout(void)
{
    struct pair p;
    CHECK_RC(pair_open(&p, 8, 256, 4096), 0);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    CHECK_RC(shm_wait(p.sandbox, SHM_WAIT_RX, 1000, 20 * 1000 * 1000), -ETIMEDOUT);
    CHECK_RC(shm_wait(p.worker, SHM_WAIT_RX, 0, 20 * 1000 * 1000), -ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    CHECK(ms >= 39 && ms < 2000);
    CHECK_RC(shm_wait(p.sandbox, 0, 0, 0), -EINVAL);
    /* shm_poll spins without parking; a record already there is found at once. */
    CHECK_RC(shm_poll(p.sandbox, SHM_WAIT_RX, 100), 0);
    CHECK_RC(shm_poll(p.sandbox, 0, 100), -EINVAL);
    CHECK_RC(send_pattern(p.worker, 1, 1), 0);
    CHECK_RC(shm_poll(p.sandbox, SHM_WAIT_RX, 0), 1);
    CHECK_RC(shm_wait(p.sandbox, SHM_WAIT_RX, 10, -1), 0);
    struct shm_stats st;
    shm_get_stats(p.sandbox, &st);
    CHECK(st.spin_hits == 0 && st.sleeps == 1); /* its timeout above slept once */
    pair_close(&p);
    return T_OK;
}

/* Two processes: the parent sends records of many sizes, the child (futex doorbell) checks each
 * and echoes its length and seed back; the parent (eventfd doorbell) checks the echoes. Both
 * rings fill up and both sides park, with and without spinning. */
static int stress(uint32_t spin, int records)
{
    struct pair p;
    CHECK_RC(pair_open(&p, 16, 256, 128 * 1024), 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        for (int i = 0; i < records; i++) {
            struct shm_msg m;
            int rc;
            while ((rc = shm_peek(p.sandbox, &m)) == -EAGAIN)
                if (shm_wait(p.sandbox, SHM_WAIT_RX, spin, -1) < 0)
                    _exit(2);
            if (rc || m.seq != (uint64_t)i || !matches(m.data, m.len, m.user))
                _exit(3);
            uint64_t echo[2] = {m.len, m.user};
            if (shm_consume(p.sandbox))
                _exit(4);
            while ((rc = shm_send(p.sandbox, echo, sizeof(echo), NULL, 0, m.user)) == -EAGAIN)
                if (shm_wait(p.sandbox, SHM_WAIT_TX, spin, -1) < 0)
                    _exit(5);
            if (rc)
                _exit(6);
        }
        shm_shutdown(p.sandbox);
        _exit(0);
    }
    int sent = 0, received = 0;
    uint64_t expected_len[1024];
    while (received < records) {
        /* Keep up to 1024 records in flight: far more than the ring holds. */
        unsigned bits = SHM_WAIT_RX;
        while (sent < records && sent - received < 1024) {
            size_t len = (size_t)(sent * 2654435761u) % 3 == 0 ? (size_t)(sent * 40503u) % 90000
                                                                 : (size_t)(sent * 31u) % 300;
            int rc = send_pattern(p.worker, len, (uint64_t)sent);
            if (rc == -EAGAIN) {
                bits |= SHM_WAIT_TX;
                break;
            }
            CHECK_RC(rc, 0);
            expected_len[sent % 1024] = len;
            sent++;
        }
        struct shm_msg m;
        int rc = shm_peek(p.worker, &m);
        if (rc == -EAGAIN) {
            CHECK_RC(shm_clear_doorbell(p.worker), 0);
            if (shm_park(p.worker, bits) == 0)
                CHECK_RC(shm_wait(p.worker, bits, spin, 5000000000ll), 0);
            continue;
        }
        CHECK_RC(rc, 0);
        uint64_t echo[2];
        CHECK(m.len == sizeof(echo));
        memcpy(echo, m.data, sizeof(echo));
        CHECK(echo[1] == (uint64_t)received && m.user == (uint32_t)received);
        CHECK(echo[0] == expected_len[received % 1024]);
        CHECK_RC(shm_consume(p.worker), 0);
        received++;
    }
    int status;
    CHECK(waitpid(child, &status, 0) == child);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "  child status %d\n", status);
        return T_FAIL;
    }
    struct shm_msg m;
    CHECK_RC(shm_peek(p.worker, &m), -EPIPE);
    struct shm_stats st;
    shm_get_stats(p.worker, &st);
    fprintf(stderr, "  spin %u: %d records, %llu full, %llu parks, %llu doorbells rung\n", spin,
            records, (unsigned long long)st.full, (unsigned long long)st.parks,
            (unsigned long long)st.doorbells);
    pair_close(&p);
    return T_OK;
}

static int test_stress_fork(void)
{
    int rc = stress(0, 10000);
    return rc ? rc : stress(2000, 10000);
}

/* Both processes on one CPU: a spin there would only keep the peer from running, so the
 * waits give up spinning and sleep instead. */
static int test_shared_cpu(void)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    if (sched_setaffinity(0, sizeof(one), &one) < 0)
        return T_SKIP;
    struct pair p;
    CHECK_RC(pair_open(&p, 8, 256, 0), 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        for (int i = 0; i < 100; i++) {
            struct shm_msg m;
            while (shm_peek(p.sandbox, &m) == -EAGAIN)
                if (shm_wait(p.sandbox, SHM_WAIT_RX, 1000000, -1) < 0)
                    _exit(2);
            if (shm_consume(p.sandbox) || send_pattern(p.sandbox, 8, (uint64_t)i))
                _exit(3);
        }
        /* Whichever side ran to a wait while the other was runnable on this CPU gave up its
         * spin; here that is the child, which the parent's send wakes (and which preempts it). */
        struct shm_stats st;
        shm_get_stats(p.sandbox, &st);
        _exit(st.spins_given_up > 0 ? 0 : 4);
    }
    for (int i = 0; i < 100; i++) {
        CHECK_RC(send_pattern(p.worker, 8, (uint64_t)i), 0);
        struct shm_msg m;
        while (shm_peek(p.worker, &m) == -EAGAIN)
            CHECK_RC(shm_wait(p.worker, SHM_WAIT_RX, 1000000, 5000000000ll), 0);
        CHECK_RC(expect(p.worker, 8, (uint64_t)i), 0);
    }
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status));
    struct shm_stats st;
    shm_get_stats(p.worker, &st);
    CHECK(WEXITSTATUS(status) == 0 || st.spins_given_up > 0);
    pair_close(&p);
    cpu_set_t all;
    CPU_ZERO(&all);
    for (int c = 0; c < CPU_SETSIZE; c++)
        CPU_SET(c, &all);
    sched_setaffinity(0, sizeof(all), &all);
    return T_OK;
}

/* --- runner ---------------------------------------------------------------------------------- */

static const struct test tests[] = {
    {"geometry", test_geometry},         {"attach_validates", test_attach_validates},
    {"round_trip", test_round_trip},     {"full_ring", test_full_ring},
    {"arena_wrap", test_arena_wrap},     {"shutdown", test_shutdown},
    {"wait_timeout", test_wait_timeout}, {"stress_fork", test_stress_fork},
    {"shared_cpu", test_shared_cpu},
};

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (!(shm_features() & SHM_HAVE_MEMFD)) {
        fprintf(stderr, "skip: memfd_create is not available\n");
        return T_SKIP;
    }
    return run_tests(tests, sizeof(tests) / sizeof(tests[0]), argc, argv);
}
