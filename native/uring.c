/*
 * uring.c - the worker's doorbell ring; see uring.h. Raw io_uring system calls, ordering as in
 * liburing (src/queue.c, src/include/liburing/barrier.h): the kernel reads the SQ tail and
 * writes the CQ tail with acquire/release, so do we.
 */
#define _GNU_SOURCE
#include "uring.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__NR_io_uring_setup) && __has_include(<linux/io_uring.h>)
#include <linux/io_uring.h>
#define URING_BUILT 1
#else
#define URING_BUILT 0
#endif

#if URING_BUILT

struct uring {
    int fd;
    unsigned flags; /* URING_* */
    unsigned features;
    /* SQ: shared head (kernel's), tail (ours), and the flags word (NEED_WAKEUP, CQ_OVERFLOW). */
    _Atomic unsigned *sq_head;
    _Atomic unsigned *sq_tail;
    _Atomic unsigned *sq_flags;
    unsigned sq_mask;
    unsigned sq_entries;
    unsigned sqe_tail; /* our tail: SQEs filled in but not yet published */
    struct io_uring_sqe *sqes;
    /* CQ: shared head (ours) and tail (kernel's). */
    _Atomic unsigned *cq_head;
    _Atomic unsigned *cq_tail;
    unsigned cq_mask;
    struct io_uring_cqe *cqes;
    /* the mappings, to unmap */
    void *sq_map;
    size_t sq_map_size;
    void *cq_map;
    size_t cq_map_size;
    size_t sqes_size;
    struct uring_stats stats;
};

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    int fd = (int)syscall(__NR_io_uring_setup, entries, p);
    return fd < 0 ? -errno : fd;
}

static int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags,
                     const void *arg, size_t argsz)
{
    for (;;) {
        long rc = syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz);
        if (rc >= 0)
            return (int)rc;
        if (errno != EINTR)
            return -errno;
    }
}

static void unmap(struct uring *r)
{
    if (r->sqes && r->sqes != MAP_FAILED)
        munmap(r->sqes, r->sqes_size);
    if (r->cq_map && r->cq_map != MAP_FAILED && r->cq_map != r->sq_map)
        munmap(r->cq_map, r->cq_map_size);
    if (r->sq_map && r->sq_map != MAP_FAILED)
        munmap(r->sq_map, r->sq_map_size);
}

int uring_open(unsigned entries, unsigned flags, unsigned sq_idle_ms, struct uring **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!entries || entries > 4096 || (entries & (entries - 1)) || (flags & ~URING_SQPOLL))
        return -EINVAL;
    struct uring *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
    p.cq_entries = entries * 2;
    if (flags & URING_SQPOLL) {
        p.flags |= IORING_SETUP_SQPOLL;
        p.sq_thread_idle = sq_idle_ms;
    }
    int rc = sys_setup(entries, &p);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->fd = rc;
    r->flags = flags;
    r->features = p.features;

    r->sq_map_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_map_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    /* Since 5.4 both rings live in one mapping (IORING_FEAT_SINGLE_MMAP). */
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (r->cq_map_size > r->sq_map_size)
            r->sq_map_size = r->cq_map_size;
        r->cq_map_size = r->sq_map_size;
    }
    r->sq_map = mmap(NULL, r->sq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                     r->fd, IORING_OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED)
        goto fail;
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        r->cq_map = r->sq_map;
    } else {
        r->cq_map = mmap(NULL, r->cq_map_size, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
        if (r->cq_map == MAP_FAILED)
            goto fail;
    }
    r->sqes_size = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                   IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED)
        goto fail;

    char *sq = r->sq_map, *cq = r->cq_map;
    r->sq_head = (_Atomic unsigned *)(sq + p.sq_off.head);
    r->sq_tail = (_Atomic unsigned *)(sq + p.sq_off.tail);
    r->sq_flags = (_Atomic unsigned *)(sq + p.sq_off.flags);
    r->sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_entries = *(unsigned *)(sq + p.sq_off.ring_entries);
    r->cq_head = (_Atomic unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (_Atomic unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    /* The SQ array indirection is identity: SQE i sits in slot i (as liburing sets it up). */
    unsigned *array = (unsigned *)(sq + p.sq_off.array);
    for (unsigned i = 0; i < r->sq_entries; i++)
        array[i] = i;
    r->sqe_tail = atomic_load_explicit(r->sq_tail, memory_order_relaxed);
    *out = r;
    return 0;
fail:
    rc = -errno;
    unmap(r);
    close(r->fd);
    free(r);
    return rc;
}

void uring_close(struct uring *r)
{
    if (!r)
        return;
    unmap(r);
    close(r->fd);
    free(r);
}

int uring_fd(const struct uring *r)
{
    return r->fd;
}

/* SQEs filled in but not yet taken by the kernel. For SQPOLL its thread moves the head while
 * we look, hence the acquire (liburing's io_uring_sq_ready). */
static inline unsigned sq_pending(const struct uring *r)
{
    return r->sqe_tail - atomic_load_explicit(r->sq_head, memory_order_acquire);
}

int uring_submit(struct uring *r)
{
    unsigned tail = r->sqe_tail;
    unsigned published = atomic_load_explicit(r->sq_tail, memory_order_relaxed);
    unsigned fresh = tail - published;
    /* Release: the SQE contents are visible before the kernel can see the tail move. */
    if (fresh)
        atomic_store_explicit(r->sq_tail, tail, memory_order_release);
    unsigned enter_flags = 0, to_submit = 0;
    if (r->flags & URING_SQPOLL) {
        /* Dekker with the SQ thread going to sleep (liburing's sq_ring_needs_enter): our tail
         * store, a full barrier, then its NEED_WAKEUP flag. Without the barrier the load may
         * pass the store, the thread sleeps without seeing our SQEs, and we do not wake it. */
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(r->sq_flags, memory_order_relaxed) & IORING_SQ_NEED_WAKEUP) {
            enter_flags |= IORING_ENTER_SQ_WAKEUP;
            r->stats.wakeups++;
        }
    } else {
        to_submit = sq_pending(r);
    }
    /* Completions that did not fit the CQ wait in the kernel (IORING_FEAT_NODROP); entering
     * with GETEVENTS moves them into the CQ as room frees up. */
    if (atomic_load_explicit(r->sq_flags, memory_order_relaxed) & IORING_SQ_CQ_OVERFLOW)
        enter_flags |= IORING_ENTER_GETEVENTS;
    r->stats.submitted += fresh;
    if (!to_submit && !enter_flags)
        return (int)fresh;
    r->stats.enters++;
    int rc = sys_enter(r->fd, to_submit, 0, enter_flags, NULL, 0);
    return rc < 0 ? rc : (int)fresh;
}

/* The next free SQE, zeroed; when the SQ is full, what is queued goes to the kernel first. */
static struct io_uring_sqe *next_sqe(struct uring *r, int *err)
{
    if (sq_pending(r) >= r->sq_entries) {
        int rc = uring_submit(r);
        if (rc < 0) {
            *err = rc;
            return NULL;
        }
        if ((r->flags & URING_SQPOLL) && sq_pending(r) >= r->sq_entries) {
            /* The SQ thread has not caught up: wait until it frees a slot. */
            r->stats.enters++;
            rc = sys_enter(r->fd, 0, 0, IORING_ENTER_SQ_WAIT, NULL, 0);
            if (rc < 0) {
                *err = rc;
                return NULL;
            }
        }
        if (sq_pending(r) >= r->sq_entries) {
            *err = -EBUSY;
            return NULL;
        }
    }
    struct io_uring_sqe *sqe = &r->sqes[r->sqe_tail & r->sq_mask];
    memset(sqe, 0, sizeof(*sqe));
    return sqe;
}

int uring_queue_read(struct uring *r, int fd, void *buf, uint32_t len, uint64_t user_data)
{
    if (fd < 0 || !buf)
        return -EINVAL;
    int err = 0;
    struct io_uring_sqe *sqe = next_sqe(r, &err);
    if (!sqe)
        return err;
    sqe->opcode = IORING_OP_READ;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)buf;
    sqe->len = len;
    sqe->off = (uint64_t)-1; /* the file position, as read(2) would: eventfds have none */
    sqe->user_data = user_data;
    r->sqe_tail++;
    r->stats.queued++;
    return 0;
}

int uring_queue_cancel(struct uring *r, uint64_t target, int all)
{
    int err = 0;
    struct io_uring_sqe *sqe = next_sqe(r, &err);
    if (!sqe)
        return err;
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    if (all)
        sqe->cancel_flags = IORING_ASYNC_CANCEL_ANY; /* 5.19 */
    else
        sqe->addr = target;
    sqe->user_data = 0;
    r->sqe_tail++;
    r->stats.queued++;
    return 0;
}

int uring_cancel_sync(struct uring *r, uint64_t target)
{
    /* A read still in our SQ would not be found, and would start after we said it was gone. */
    int rc = uring_submit(r);
    if (rc < 0)
        return rc;
    if ((r->flags & URING_SQPOLL) && sq_pending(r)) {
        r->stats.enters++;
        rc = sys_enter(r->fd, 0, 0, IORING_ENTER_SQ_WAIT, NULL, 0);
        if (rc < 0)
            return rc;
        while (sq_pending(r)) /* the SQ thread has a free slot, not yet our SQE: it is near */
            sched_yield();
    }
    struct io_uring_sync_cancel_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.addr = target;
    reg.fd = -1;
    reg.timeout.tv_sec = -1; /* no time limit */
    reg.timeout.tv_nsec = -1;
    r->stats.enters++;
    for (;;) {
        long ret = syscall(__NR_io_uring_register, r->fd, IORING_REGISTER_SYNC_CANCEL, &reg, 1);
        if (ret >= 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

int uring_reap(struct uring *r, struct uring_cqe *out, unsigned max)
{
    unsigned head = atomic_load_explicit(r->cq_head, memory_order_relaxed);
    /* Acquire: the CQEs up to the tail are written before we read them. */
    unsigned tail = atomic_load_explicit(r->cq_tail, memory_order_acquire);
    unsigned n = 0;
    for (; head != tail && n < max; head++, n++) {
        const struct io_uring_cqe *cqe = &r->cqes[head & r->cq_mask];
        out[n].user_data = cqe->user_data;
        out[n].res = cqe->res;
        out[n].flags = cqe->flags;
    }
    /* Release: we are done reading those slots before the kernel may reuse them. */
    if (n)
        atomic_store_explicit(r->cq_head, head, memory_order_release);
    r->stats.completed += n;
    return (int)n;
}

static unsigned cq_ready(const struct uring *r)
{
    return atomic_load_explicit(r->cq_tail, memory_order_acquire) -
           atomic_load_explicit(r->cq_head, memory_order_relaxed);
}

int uring_wait(struct uring *r, unsigned min_complete, int64_t timeout_ns)
{
    int rc = uring_submit(r);
    if (rc < 0)
        return rc;
    if (cq_ready(r) >= min_complete)
        return 0;
    unsigned to_submit = (r->flags & URING_SQPOLL) ? 0 : sq_pending(r);
    r->stats.enters++;
    if (timeout_ns < 0) {
        rc = sys_enter(r->fd, to_submit, min_complete, IORING_ENTER_GETEVENTS, NULL, 0);
        return rc < 0 ? rc : 0;
    }
    if (!(r->features & IORING_FEAT_EXT_ARG)) /* 5.11 */
        return -EOPNOTSUPP;
    struct __kernel_timespec ts = {
        .tv_sec = timeout_ns / 1000000000,
        .tv_nsec = timeout_ns % 1000000000,
    };
    struct io_uring_getevents_arg arg = {
        .sigmask = 0,
        .sigmask_sz = _NSIG / 8,
        .ts = (uint64_t)(uintptr_t)&ts,
    };
    rc = sys_enter(r->fd, to_submit, min_complete,
                   IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof(arg));
    return rc < 0 ? rc : 0;
}

void uring_get_stats(const struct uring *r, struct uring_stats *out)
{
    *out = r->stats;
}

int uring_doorbell_arm(struct uring *r, struct uring_doorbell *db)
{
    db->count = 0;
    int rc = uring_queue_read(r, db->fd, &db->count, sizeof(db->count), (uint64_t)(uintptr_t)db);
    db->armed = rc == 0;
    return rc;
}

int uring_doorbell_disarm(struct uring *r, struct uring_doorbell *db)
{
    db->armed = 0;
    return uring_cancel_sync(r, (uint64_t)(uintptr_t)db);
}

int uring_doorbell_reap(struct uring *r, struct uring_doorbell **out, unsigned max)
{
    unsigned head = atomic_load_explicit(r->cq_head, memory_order_relaxed);
    /* Acquire, as in uring_reap: the CQEs (and the counts the reads wrote) are visible. */
    unsigned tail = atomic_load_explicit(r->cq_tail, memory_order_acquire);
    unsigned n = 0, seen = 0;
    int rc = 0;
    for (; head != tail && n < max; head++, seen++) {
        const struct io_uring_cqe *cqe = &r->cqes[head & r->cq_mask];
        struct uring_doorbell *db = (struct uring_doorbell *)(uintptr_t)cqe->user_data;
        if (!db)
            continue; /* a cancellation's own completion */
        db->res = cqe->res;
        out[n++] = db;
        if (cqe->res < 0) {
            db->armed = 0;
        } else if (db->armed) {
            /* The count is the caller's once reaped: the read that follows starts from 0. */
            rc = uring_doorbell_arm(r, db);
            if (rc < 0)
                break;
        }
    }
    /* Release: we are done with those slots before the kernel may reuse them. */
    if (seen)
        atomic_store_explicit(r->cq_head, head, memory_order_release);
    r->stats.completed += seen;
    if (rc == 0)
        rc = uring_submit(r);
    return rc < 0 ? rc : (int)n;
}

int uring_probe(unsigned flags)
{
    struct uring *r;
    int rc = uring_open(4, flags, 10, &r);
    if (rc < 0)
        return rc;
    uint64_t value = 0;
    struct uring_cqe cqe;
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
        rc = -errno;
        goto out;
    }
    /* The doorbells are non-blocking eventfds (their owner reads them from an event loop). A
     * kernel that does not arm a poll for them fails the read at once with -EAGAIN. */
    rc = uring_queue_read(r, efd, &value, sizeof(value), 1);
    if (rc == 0)
        rc = uring_wait(r, 1, 2 * 1000 * 1000); /* 2 ms: a waiting read does not complete */
    if (rc == 0) {
        rc = uring_reap(r, &cqe, 1) == 1 && cqe.res == -EAGAIN ? -EOPNOTSUPP : -EPROTO;
        goto out;
    }
    if (rc != -ETIME)
        goto out;
    uint64_t one = 1;
    if (write(efd, &one, sizeof(one)) != sizeof(one)) {
        rc = -errno;
        goto out;
    }
    rc = uring_wait(r, 1, 1000 * 1000 * 1000);
    if (rc == 0)
        rc = uring_reap(r, &cqe, 1) == 1 && cqe.res == sizeof(value) && value == 1 ? 0 : -EPROTO;
    /* Unwatching a doorbell cancels its read synchronously (6.0; -EINVAL before). */
    if (rc == 0)
        rc = uring_queue_read(r, efd, &value, sizeof(value), 2);
    if (rc == 0)
        rc = uring_cancel_sync(r, 2);
out:
    if (efd >= 0)
        close(efd);
    uring_close(r); /* cancels the read if it is still waiting; `value` is not written after */
    return rc;
}

#else /* !URING_BUILT: headers without io_uring; every call says so */

int uring_probe(unsigned flags)
{
    (void)flags;
    return -ENOSYS;
}
int uring_open(unsigned entries, unsigned flags, unsigned sq_idle_ms, struct uring **out)
{
    (void)entries, (void)flags, (void)sq_idle_ms;
    if (out)
        *out = NULL;
    return -ENOSYS;
}
void uring_close(struct uring *ring)
{
    (void)ring;
}
int uring_fd(const struct uring *ring)
{
    (void)ring;
    return -ENOSYS;
}
int uring_queue_read(struct uring *ring, int fd, void *buf, uint32_t len, uint64_t user_data)
{
    (void)ring, (void)fd, (void)buf, (void)len, (void)user_data;
    return -ENOSYS;
}
int uring_queue_cancel(struct uring *ring, uint64_t target, int all)
{
    (void)ring, (void)target, (void)all;
    return -ENOSYS;
}
int uring_submit(struct uring *ring)
{
    (void)ring;
    return -ENOSYS;
}
int uring_cancel_sync(struct uring *ring, uint64_t target)
{
    (void)ring, (void)target;
    return -ENOSYS;
}
int uring_reap(struct uring *ring, struct uring_cqe *out, unsigned max)
{
    (void)ring, (void)out, (void)max;
    return -ENOSYS;
}
int uring_wait(struct uring *ring, unsigned min_complete, int64_t timeout_ns)
{
    (void)ring, (void)min_complete, (void)timeout_ns;
    return -ENOSYS;
}
void uring_get_stats(const struct uring *ring, struct uring_stats *out)
{
    (void)ring;
    memset(out, 0, sizeof(*out));
}
int uring_doorbell_arm(struct uring *ring, struct uring_doorbell *db)
{
    (void)ring, (void)db;
    return -ENOSYS;
}
int uring_doorbell_disarm(struct uring *ring, struct uring_doorbell *db)
{
    (void)ring, (void)db;
    return -ENOSYS;
}
int uring_doorbell_reap(struct uring *ring, struct uring_doorbell **out, unsigned max)
{
    (void)ring, (void)out, (void)max;
    return -ENOSYS;
}

#endif
