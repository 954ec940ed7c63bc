/*
 * shm.h - the shared-memory channel between a worker and a sandbox.
 *
 * One memfd region per instance, made by the worker (shm_create) and mapped by both sides
 * (shm_attach). It holds one single-producer/single-consumer ring each way and, per direction,
 * an arena for records that do not fit a slot:
 *
 *   0             struct shm_header     magic, version, geometry, offsets (read-only once made)
 *   64            struct shm_side[2]    per endpoint: parked bits, futex word, closed flag
 *   192           struct shm_ring[2]    per direction: tail | head, arena_freed (own lines)
 *   page          slots of ring 0       worker -> sandbox
 *                 slots of ring 1       sandbox -> worker
 *                 arena 0, arena 1
 *
 * A record is a byte string plus a 32-bit word opaque to C (`user`). Records up to
 * shm_inline_capacity() bytes travel inside their slot; larger ones (up to the arena size) in
 * the producer's arena, which the consumer frees, in order, as it consumes. A full ring or a
 * full arena is -EAGAIN: the caller parks until the peer makes room.
 *
 * Doorbells are rung only for a parked peer. A consumer spins a bounded number of iterations,
 * then publishes "parked" (SHM_WAIT_RX, or SHM_WAIT_TX while it waits for room to send),
 * checks again, and sleeps: on a futex word in the region (the sandbox side), or in its event
 * loop on an eventfd (the worker side). A producer that publishes a record, or a consumer that
 * frees room, rings the peer only when the peer's parked bits ask for it.
 *
 * Every function returns 0 (or a count) on success and -errno on failure, never sets errno.
 * The region is shared with code that is not trusted: the consumer validates every index,
 * length and offset it reads from it before use (-EPROTO), and the worker side insists that
 * the memfd is sealed against shrinking, so a sandbox cannot make the worker fault.
 */
#ifndef FAASD_SHM_H
#define FAASD_SHM_H

#include <stddef.h>
#include <stdint.h>

#define SHM_MAGIC 0x4d485346u /* "FSHM" in little-endian bytes */
#define SHM_VERSION 1u

/* Which end of the channel an endpoint is. The worker sends on ring 0, the sandbox on ring 1. */
#define SHM_WORKER 0
#define SHM_SANDBOX 1

/* Parked bits: what a sleeping endpoint waits for. */
#define SHM_WAIT_RX 1u /* a record in its receive ring (or the peer closing) */
#define SHM_WAIT_TX 2u /* room in its send ring or arena (or the peer closing) */

/* Size of a slot's header; the rest of the slot carries the record inline. */
#define SHM_SLOT_HEADER 64u
#define SHM_CACHE_LINE 64u
/* Geometry bounds checked by shm_create and shm_attach. */
#define SHM_MIN_SLOT_SIZE 128u
#define SHM_MAX_SLOT_COUNT 65536u
#define SHM_MAX_ARENA (1ull << 32)

/* Features reported by shm_features(), probed at run time. */
#define SHM_HAVE_MEMFD 1
#define SHM_HAVE_FUTEX 2
#define SHM_HAVE_EVENTFD 4
#define SHM_HAVE_IO_URING 8

/* Sizes of a region. slot_count: a power of two; slot_size: a multiple of 64, at least
 * SHM_MIN_SLOT_SIZE; arena_size: a multiple of 64 (0: records are limited to a slot). */
struct shm_geometry {
    uint32_t slot_count;
    uint32_t slot_size;
    uint64_t arena_size;
};

/* A received record, valid until shm_consume(). `data` points into the shared region. */
struct shm_msg {
    uint64_t seq;
    const uint8_t *data;
    uint32_t len;
    uint32_t user;
};

/* Counters of one endpoint (process-local). */
struct shm_stats {
    uint64_t sent;
    uint64_t received;
    uint64_t sent_arena;     /* records that went through the arena */
    uint64_t full;           /* sends refused with -EAGAIN */
    uint64_t doorbells;      /* peer wake-ups this endpoint rang */
    uint64_t parks;          /* times this endpoint published parked bits */
    uint64_t sleeps;         /* times it actually slept (futex or poll) */
    uint64_t spin_hits;      /* waits that the spin satisfied without parking */
    uint64_t spins_given_up; /* spins cut short: the peer runs on this CPU */
};

struct shm_endpoint;

/* SHM_HAVE_* bits for what this kernel offers (io_uring probed with io_uring_setup). */
int shm_features(void);

/* Bytes of a region with this geometry; -EINVAL if the geometry is not valid. */
int64_t shm_region_size(const struct shm_geometry *geometry);

/* Make a region: a memfd (close-on-exec) of the right size, formatted, sealed against
 * shrinking, growing and further sealing. Returns the fd, or -errno. */
int shm_create(const struct shm_geometry *geometry);

/* Map `memfd` as endpoint `side`. `own_efd`: this endpoint's eventfd doorbell, or -1 to
 * sleep on the region's futex word. `peer_efd`: the peer's eventfd, or -1 if the peer sleeps
 * on its futex word. The fds stay owned by the caller; the mapping does not need memfd open.
 * Validates magic, version, geometry and the file's size and seals. */
int shm_attach(int memfd, int side, int own_efd, int peer_efd, struct shm_endpoint **out);

/* Unmap and free. Does not tell the peer: call shm_shutdown first for that. */
void shm_detach(struct shm_endpoint *ep);

/* Mark this endpoint closed and wake the peer. The peer's shm_peek then returns -EPIPE once
 * its ring is empty, and its shm_send returns -EPIPE. */
int shm_shutdown(struct shm_endpoint *ep);

/* Publish one record made of `a` (alen bytes) followed by `b` (blen bytes; may be NULL/0).
 * 0; -EAGAIN ring or arena full (nothing sent); -EMSGSIZE larger than shm_max_record();
 * -EPIPE either side closed. */
int shm_send(struct shm_endpoint *ep, const void *a, size_t alen, const void *b, size_t blen,
             uint32_t user);

/* The oldest record of the receive ring, without consuming it. 0; -EAGAIN empty; -EPIPE
 * empty and the peer closed; -EPROTO the peer wrote something invalid. Peeking twice returns
 * the same record. */
int shm_peek(struct shm_endpoint *ep, struct shm_msg *msg);

/* Release the record that shm_peek returned: its slot and arena space go back to the peer.
 * -EINVAL if nothing was peeked. */
int shm_consume(struct shm_endpoint *ep);

/* The receive loop's one call per record: release the record the last shm_next (or shm_peek)
 * returned, then peek at the next. If the ring is empty and `park_bits` is not 0, park as
 * shm_park does; -EAGAIN then means parked (the peer will ring), and a record that came in the
 * meantime is returned as usual. */
int shm_next(struct shm_endpoint *ep, struct shm_msg *msg, unsigned park_bits);

/* Publish parked `bits`, then check once more. 1: what was waited for is already there (the
 * bits are withdrawn); 0: parked, the peer will ring this endpoint's doorbell. For an
 * endpoint that sleeps in an event loop on its eventfd. */
int shm_park(struct shm_endpoint *ep, unsigned bits);

/* Drain this endpoint's eventfd and withdraw its parked bits. For the event loop's reader
 * callback, before it drains the ring. */
int shm_clear_doorbell(struct shm_endpoint *ep);

/* Withdraw this endpoint's parked bits, for a caller whose doorbell was already consumed
 * elsewhere (an io_uring read of the eventfd completed): shm_clear_doorbell without the read. */
int shm_unpark(struct shm_endpoint *ep);

/* Spin up to `spin` iterations (0: look once) until what `bits` ask for is there, without
 * sleeping. 1: ready; 0: not yet. The spin stops early when the peer last ran on this CPU
 * (each side notes its CPU in the region as it spins). Those of `bits` that were parked are withdrawn during the
 * spin (the peer need not ring) and parked again if it finds nothing. For an event loop that
 * expects a reply within microseconds. */
int shm_poll(struct shm_endpoint *ep, unsigned bits, uint32_t spin);

/* Block until what `bits` ask for is there: spin up to `spin` iterations, then park and sleep
 * (futex word, or poll on own eventfd). 0: ready (a record, room, or the peer closed);
 * -ETIMEDOUT after timeout_ns (negative: no limit); -EINTR a signal arrived.
 * SHM_WAIT_TX waits for the room that the last -EAGAIN from shm_send lacked to change. */
int shm_wait(struct shm_endpoint *ep, unsigned bits, uint32_t spin, int64_t timeout_ns);

/* Largest record shm_send accepts, and the largest that travels inline in a slot. */
uint64_t shm_max_record(const struct shm_endpoint *ep);
uint32_t shm_inline_capacity(const struct shm_endpoint *ep);

void shm_get_stats(const struct shm_endpoint *ep, struct shm_stats *out);

#endif /* FAASD_SHM_H */
