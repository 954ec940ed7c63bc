/*
 * uring.h - a small io_uring for the worker's doorbells: raw system calls and
 * <linux/io_uring.h>, no liburing (the project builds with gcc and the kernel headers only).
 *
 * The worker waits on one eventfd per instance. Instead of one epoll registration and one
 * read() per doorbell, it keeps an IORING_OP_READ of 8 bytes queued on each eventfd: the
 * completion has already consumed the doorbell's count, and the reads that must be queued
 * again after a batch of completions go to the kernel in one io_uring_enter. The event loop
 * watches the ring's own fd (it polls readable while completions wait in the CQ), so many
 * instances cost the loop one fd.
 *
 * The shape follows liburing: the application queues SQEs at its private tail and publishes
 * them with a store-release of the shared SQ tail; it reads CQEs up to a load-acquire of the CQ
 * tail and gives their slots back with a store-release of the CQ head. One thread uses a ring
 * (the event loop's): nothing here is safe to call from two threads at once.
 *
 * Every function returns 0 (or a count) on success and -errno on failure, never sets errno.
 */
#ifndef FAASD_URING_H
#define FAASD_URING_H

#include <stddef.h>
#include <stdint.h>

/* uring_open flags. URING_SQPOLL: a kernel thread polls the SQ, so that queueing needs no
 * system call while it is awake (it sleeps after `sq_idle_ms` without work). */
#define URING_SQPOLL 1u

/* One completion as uring_reap hands it out: the request's user_data, its result (bytes read,
 * or -errno), and the kernel's IORING_CQE_F_* flags. */
struct uring_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

struct uring_stats {
    uint64_t queued;    /* SQEs queued */
    uint64_t enters;    /* io_uring_enter calls */
    uint64_t submitted; /* SQEs the kernel took */
    uint64_t completed; /* CQEs reaped */
    uint64_t wakeups;   /* times a sleeping SQPOLL thread had to be woken */
};

struct uring;

/*
 * Whether io_uring can serve doorbells here: set up a ring, queue a read on a non-blocking
 * eventfd, check that it waits (old kernels fail it at once with -EAGAIN: -EOPNOTSUPP here)
 * and that a write completes it, and that a read can be cancelled synchronously (6.0; -EINVAL
 * before). 0, or why not: -ENOSYS (not in this kernel or these headers),
 * -EPERM (kernel.io_uring_disabled or a seccomp filter), ...
 */
int uring_probe(unsigned flags);

/* Set up a ring of `entries` SQEs (a power of two, at most 4096) with a CQ twice as large. */
int uring_open(unsigned entries, unsigned flags, unsigned sq_idle_ms, struct uring **out);

/* Unmap and close the ring; the kernel cancels what is still in flight. NULL is a no-op. */
void uring_close(struct uring *ring);

/* The ring's fd: it polls readable (EPOLLIN) while completions wait in the CQ. */
int uring_fd(const struct uring *ring);

/* Queue a read of `len` bytes from `fd` into `buf`, which must stay valid until its
 * completion is reaped. When the SQ is full the queued SQEs are submitted first. */
int uring_queue_read(struct uring *ring, int fd, void *buf, uint32_t len, uint64_t user_data);

/* Queue the cancellation of the request with `target` user_data, or of every request when
 * `all`. The cancellation's own completion carries user_data 0. */
int uring_queue_cancel(struct uring *ring, uint64_t target, int all);

/*
 * Submit what is queued, then cancel the request with `target` user_data and wait until it is
 * cancelled (IORING_REGISTER_SYNC_CANCEL, 6.0). 0: cancelled, its -ECANCELED completion
 * follows; -ENOENT: it had already completed (its completion is in the CQ or was reaped).
 * For a read of a doorbell this tells whether its count was consumed.
 */
int uring_cancel_sync(struct uring *ring, uint64_t target);

/* Hand what is queued to the kernel, in one io_uring_enter when one is needed (none for SQPOLL
 * while its thread is awake). The number of SQEs published, or -errno. */
int uring_submit(struct uring *ring);

/* Copy up to `max` waiting completions to `out` and free their slots; their number. */
int uring_reap(struct uring *ring, struct uring_cqe *out, unsigned max);

/* Submit what is queued and wait until at least `min_complete` completions wait in the CQ, or
 * `timeout_ns` passes (-ETIME; negative: no limit). */
int uring_wait(struct uring *ring, unsigned min_complete, int64_t timeout_ns);

void uring_get_stats(const struct uring *ring, struct uring_stats *out);

/*
 * Doorbells: an eventfd with a read of its count kept queued. The struct is the caller's
 * memory and the read's user_data, so it must stay valid until uring_doorbell_reap has
 * handed it out with `armed` 0 (its last completion).
 */
struct uring_doorbell {
    int32_t fd;
    int32_t res;    /* the last completion's result: 8, or -errno */
    uint32_t id;    /* the caller's */
    uint32_t armed; /* while 1, each completion queues the read again */
    uint64_t count; /* the read's buffer: the doorbell's count */
};

/* Queue the first read of `db` (fd set by the caller) and mark it armed. */
int uring_doorbell_arm(struct uring *ring, struct uring_doorbell *db);

/* Disarm `db` and cancel its read at once (uring_cancel_sync): 0 if it was cancelled, -ENOENT
 * if it had completed, in which case db->count is the count it consumed. */
int uring_doorbell_disarm(struct uring *ring, struct uring_doorbell *db);

/*
 * Reap up to `max` completions of doorbells into `out` (cancellations' own are skipped). An
 * armed doorbell whose read succeeded has it queued again, and all of those go to the kernel
 * in one uring_submit at the end: the event loop's whole wake-up is this one call. A failed
 * read disarms its doorbell. The number handed out.
 */
int uring_doorbell_reap(struct uring *ring, struct uring_doorbell **out, unsigned max);

#endif /* FAASD_URING_H */
