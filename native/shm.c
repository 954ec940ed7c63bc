/*
 * shm.c - the shared-memory channel (see shm.h for the picture and the contract).
 *
 * Memory ordering, in one place:
 *
 *  - A producer writes a slot (and its arena bytes) with plain stores, then publishes it with a
 *    store-release of the ring's tail. A consumer load-acquires the tail before it reads the
 *    slot, so it sees everything written before the publication.
 *  - A consumer is done with a record (including the bytes Python read through the pointer
 *    shm_peek handed out) when it store-releases arena_freed and then head. The producer
 *    load-acquires them before it reuses that space, so it never overwrites bytes still read.
 *  - Parking is Dekker's pattern. The sleeper stores its parked bits, issues a seq_cst fence,
 *    and checks the ring again; the waker stores its index, issues a seq_cst fence, and loads
 *    the parked bits. With both fences, at least one of them sees the other's store: either the
 *    sleeper finds the work and does not sleep, or the waker rings it. For the futex, the
 *    sleeper reads the futex word before it parks; a waker that rings in between changes the
 *    word, so FUTEX_WAIT returns at once instead of sleeping through the ring.
 *  - head, tail and the arena counters are 64-bit and only grow: they never wrap in practice,
 *    and index & mask picks the slot.
 */
#define _GNU_SOURCE
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SHM_PAGE 4096u
#define SHM_CONTROL_SIZE SHM_PAGE /* header, sides and ring indices: the first page */
#define SHM_FLAG_ARENA 1u
#define SHM_SPIN_CHECK_CPU 256u /* spin iterations between looks at where the peer runs */

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define cold __attribute__((noinline, cold))

/* --- the shared layout (never trusted once the sandbox runs) ---------------------------------- */

struct shm_header {
    uint32_t magic;
    uint32_t version;
    uint32_t control_size;
    uint32_t slot_count;
    uint32_t slot_size;
    uint32_t reserved;
    uint64_t arena_size;
    uint64_t total_size;
};

/* One per endpoint; written by that endpoint, except the futex word, which the peer bumps. */
struct shm_side {
    _Atomic uint32_t parked; /* SHM_WAIT_* bits while the endpoint sleeps */
    _Atomic uint32_t futex;  /* doorbell counter for an endpoint that sleeps on a futex */
    _Atomic uint32_t closed; /* set once by shm_shutdown */
    _Atomic uint32_t cpu;    /* 1 + the CPU it last ran on (0: not known); a hint */
} __attribute__((aligned(SHM_CACHE_LINE)));

/* One per direction. The producer's and the consumer's indices live on separate cache lines,
 * so each side writes only its own line and the two never false-share. */
struct shm_ring {
    _Alignas(SHM_CACHE_LINE) _Atomic uint64_t tail; /* producer: next sequence number */
    _Alignas(SHM_CACHE_LINE) _Atomic uint64_t head; /* consumer: next to consume */
    _Atomic uint64_t arena_freed;                   /* consumer: arena bytes released (counter) */
};

struct shm_control {
    _Alignas(SHM_CACHE_LINE) struct shm_header header;
    struct shm_side side[2];
    struct shm_ring ring[2]; /* ring[s] carries records sent by side s */
};

_Static_assert(sizeof(struct shm_control) <= SHM_CONTROL_SIZE, "control block fits a page");
_Static_assert(sizeof(struct shm_ring) == 2 * SHM_CACHE_LINE, "ring indices on two lines");

struct shm_slot {
    uint64_t seq;       /* equals the ring index it was published at */
    uint64_t arena_off; /* SHM_FLAG_ARENA: the record's start, as an arena counter */
    uint32_t len;
    uint32_t user;
    uint32_t flags;
    uint32_t reserved;
    uint8_t pad[SHM_SLOT_HEADER - 32];
    uint8_t data[];
};

_Static_assert(sizeof(struct shm_slot) == SHM_SLOT_HEADER, "slot header size");

/* --- the process-local endpoint -------------------------------------------------------------- */

struct shm_endpoint {
    uint8_t *base;
    size_t size;
    struct shm_side *me, *peer;
    struct shm_ring *tx, *rx;
    uint8_t *tx_slots, *rx_slots, *tx_arena, *rx_arena;
    /* Geometry, copied at open: never read again from the region. */
    uint32_t slot_count, slot_size, mask, inline_cap;
    uint64_t arena_size;
    int side, own_efd, peer_efd;
    /* Producer state: only this endpoint writes tx->tail, so it keeps the truth locally. */
    uint64_t tx_tail;
    uint64_t tx_head_cache;  /* the consumer's head, as last loaded */
    uint64_t tx_alloc;       /* arena counter: where the next record starts (before wrapping) */
    uint64_t tx_freed_cache; /* the consumer's arena_freed, as last loaded */
    uint64_t seen_head, seen_freed; /* at the last -EAGAIN: SHM_WAIT_TX waits for a change */
    /* Consumer state. */
    uint64_t rx_head;
    uint64_t rx_freed;
    uint64_t peek_freed; /* arena counter to release on consume; 0 for an inline record */
    bool peeked;
    struct shm_stats stats;
};

/* --- helpers --------------------------------------------------------------------------------- */

/* Counters that a receiving and a sending thread of one endpoint may both bump. */
#define STAT_INC(ep, field) __atomic_fetch_add(&(ep)->stats.field, 1, __ATOMIC_RELAXED)

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

static inline uint64_t round_up64(uint64_t n)
{
    return (n + SHM_CACHE_LINE - 1) & ~(uint64_t)(SHM_CACHE_LINE - 1);
}

static inline uint64_t page_up(uint64_t n)
{
    return (n + SHM_PAGE - 1) & ~(uint64_t)(SHM_PAGE - 1);
}

static inline struct shm_slot *slot_at(uint8_t *slots, const struct shm_endpoint *ep, uint64_t i)
{
    return (struct shm_slot *)(slots + (size_t)(i & ep->mask) * ep->slot_size);
}

static int futex(_Atomic uint32_t *word, int op, uint32_t val, const struct timespec *timeout)
{
    /* Not FUTEX_PRIVATE_FLAG: the word is shared between processes. */
    long rc = syscall(SYS_futex, (uint32_t *)word, op, val, timeout, NULL, 0);
    return rc < 0 ? -errno : (int)rc;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool geometry_ok(const struct shm_geometry *g)
{
    return g->slot_count >= 2 && g->slot_count <= SHM_MAX_SLOT_COUNT &&
           (g->slot_count & (g->slot_count - 1)) == 0 && g->slot_size >= SHM_MIN_SLOT_SIZE &&
           g->slot_size <= (1u << 20) && g->slot_size % SHM_CACHE_LINE == 0 &&
           g->arena_size <= SHM_MAX_ARENA && g->arena_size % SHM_CACHE_LINE == 0;
}

struct layout {
    uint64_t slots[2], arena[2], total;
};

static struct layout layout_of(const struct shm_geometry *g)
{
    struct layout l;
    uint64_t ring_bytes = (uint64_t)g->slot_count * g->slot_size;
    l.slots[0] = SHM_CONTROL_SIZE;
    l.slots[1] = l.slots[0] + ring_bytes;
    l.arena[0] = page_up(l.slots[1] + ring_bytes);
    l.arena[1] = l.arena[0] + g->arena_size;
    l.total = page_up(l.arena[1] + g->arena_size);
    return l;
}

/* --- features, create, open, close ----------------------------------------------------------- */

int shm_features(void)
{
    static _Atomic int cached = -1;
    int features = atomic_load_explicit(&cached, memory_order_relaxed);
    if (features >= 0)
        return features;
    features = SHM_HAVE_FUTEX;
    int fd = memfd_create("faasd-probe", MFD_CLOEXEC);
    if (fd >= 0) {
        features |= SHM_HAVE_MEMFD;
        close(fd);
    }
    fd = eventfd(0, EFD_CLOEXEC);
    if (fd >= 0) {
        features |= SHM_HAVE_EVENTFD;
        close(fd);
    }
#ifdef __NR_io_uring_setup
    /* io_uring can be compiled out, disabled by sysctl (kernel.io_uring_disabled) or denied by
     * seccomp: only a ring that actually sets up counts. */
    struct io_uring_params params;
    memset(&params, 0, sizeof(params));
    fd = (int)syscall(__NR_io_uring_setup, 2, &params);
    if (fd >= 0) {
        features |= SHM_HAVE_IO_URING;
        close(fd);
    }
#endif
    atomic_store_explicit(&cached, features, memory_order_relaxed);
    return features;
}

int64_t shm_region_size(const struct shm_geometry *geometry)
{
    if (!geometry || !geometry_ok(geometry))
        return -EINVAL;
    return (int64_t)layout_of(geometry).total;
}

int shm_create(const struct shm_geometry *geometry)
{
    if (!geometry || !geometry_ok(geometry))
        return -EINVAL;
    struct layout l = layout_of(geometry);
    int fd = memfd_create("faasd-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (ftruncate(fd, (off_t)l.total) < 0) {
        rc = -errno;
        goto fail;
    }
    /* The rest of the region reads as zeros: empty rings, nobody parked, nothing closed. */
    struct shm_control *ctl =
        mmap(NULL, SHM_CONTROL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ctl == MAP_FAILED) {
        rc = -errno;
        goto fail;
    }
    ctl->header = (struct shm_header){
        .magic = SHM_MAGIC,
        .version = SHM_VERSION,
        .control_size = SHM_CONTROL_SIZE,
        .slot_count = geometry->slot_count,
        .slot_size = geometry->slot_size,
        .arena_size = geometry->arena_size,
        .total_size = l.total,
    };
    munmap(ctl, SHM_CONTROL_SIZE);
    /* Sealed: a sandbox cannot shrink the file under the worker's mapping (SIGBUS) or grow it. */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        rc = -errno;
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return rc;
}

int shm_attach(int memfd, int side, int own_efd, int peer_efd, struct shm_endpoint **out)
{
    if (!out || (side != SHM_WORKER && side != SHM_SANDBOX))
        return -EINVAL;
    *out = NULL;
    if (own_efd >= 0) {
        /* shm_clear_doorbell reads it from an event loop: a read must never block. */
        int flags = fcntl(own_efd, F_GETFL);
        if (flags < 0)
            return -errno;
        if (!(flags & O_NONBLOCK))
            return -EINVAL;
    }
    struct stat st;
    if (fstat(memfd, &st) < 0)
        return -errno;
    int seals = fcntl(memfd, F_GET_SEALS);
    if (seals < 0)
        return -errno;
    if (!(seals & F_SEAL_SHRINK))
        return -EPERM;
    if (st.st_size < (off_t)SHM_CONTROL_SIZE)
        return -EPROTO;
    size_t size = (size_t)st.st_size;
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (base == MAP_FAILED)
        return -errno;
    struct shm_control *ctl = (struct shm_control *)base;
    struct shm_header h;
    memcpy(&h, &ctl->header, sizeof(h));
    struct shm_geometry g = {h.slot_count, h.slot_size, h.arena_size};
    int rc = 0;
    if (h.magic != SHM_MAGIC)
        rc = -EPROTO;
    else if (h.version != SHM_VERSION)
        rc = -EPROTONOSUPPORT;
    else if (h.control_size != SHM_CONTROL_SIZE || !geometry_ok(&g) ||
             layout_of(&g).total != h.total_size || h.total_size != size)
        rc = -EPROTO;
    struct shm_endpoint *ep = rc ? NULL : calloc(1, sizeof(*ep));
    if (!rc && !ep)
        rc = -ENOMEM;
    if (rc) {
        munmap(base, size);
        return rc;
    }
    struct layout l = layout_of(&g);
    int peer = 1 - side;
    ep->base = base;
    ep->size = size;
    ep->me = &ctl->side[side];
    ep->peer = &ctl->side[peer];
    ep->tx = &ctl->ring[side];
    ep->rx = &ctl->ring[peer];
    ep->tx_slots = base + l.slots[side];
    ep->rx_slots = base + l.slots[peer];
    ep->tx_arena = base + l.arena[side];
    ep->rx_arena = base + l.arena[peer];
    ep->slot_count = g.slot_count;
    ep->slot_size = g.slot_size;
    ep->mask = g.slot_count - 1;
    ep->inline_cap = g.slot_size - SHM_SLOT_HEADER;
    ep->arena_size = g.arena_size;
    ep->side = side;
    ep->own_efd = own_efd;
    ep->peer_efd = peer_efd;
    /* Each side opens its endpoint once; it picks up the indices where they stand. */
    ep->tx_tail = atomic_load_explicit(&ep->tx->tail, memory_order_relaxed);
    ep->tx_head_cache = atomic_load_explicit(&ep->tx->head, memory_order_acquire);
    ep->tx_freed_cache = atomic_load_explicit(&ep->tx->arena_freed, memory_order_acquire);
    ep->tx_alloc = ep->tx_freed_cache;
    ep->rx_head = atomic_load_explicit(&ep->rx->head, memory_order_relaxed);
    ep->rx_freed = atomic_load_explicit(&ep->rx->arena_freed, memory_order_relaxed);
    *out = ep;
    return 0;
}

void shm_detach(struct shm_endpoint *ep)
{
    if (!ep)
        return;
    munmap(ep->base, ep->size);
    free(ep);
}

uint64_t shm_max_record(const struct shm_endpoint *ep)
{
    return ep->arena_size > ep->inline_cap ? ep->arena_size : ep->inline_cap;
}

uint32_t shm_inline_capacity(const struct shm_endpoint *ep)
{
    return ep->inline_cap;
}

void shm_get_stats(const struct shm_endpoint *ep, struct shm_stats *out)
{
    *out = ep->stats;
}

/* --- doorbells ------------------------------------------------------------------------------- */

static void ring_doorbell(struct shm_endpoint *ep)
{
    STAT_INC(ep, doorbells);
    if (ep->peer_efd >= 0) {
        uint64_t one = 1;
        /* Fails only if the counter would overflow: then the peer has a wake-up pending. */
        ssize_t n = write(ep->peer_efd, &one, sizeof(one));
        (void)n;
    } else {
        atomic_fetch_add_explicit(&ep->peer->futex, 1, memory_order_release);
        futex(&ep->peer->futex, FUTEX_WAKE, INT_MAX, NULL);
    }
}

/* After publishing (tail, arena_freed, head or closed): ring the peer if it sleeps on `bits`. */
static inline void wake_peer_if(struct shm_endpoint *ep, unsigned bits)
{
    /* Dekker, the waker's half: our store above, this fence, then the load of its bits. */
    atomic_thread_fence(memory_order_seq_cst);
    if (unlikely(atomic_load_explicit(&ep->peer->parked, memory_order_relaxed) & bits))
        ring_doorbell(ep);
}

/* Note the CPU this endpoint runs on, for the peer; written only when it changes, so that the
 * line the peer reads stays shared. */
static inline uint32_t note_cpu(struct shm_endpoint *ep)
{
    int cpu = sched_getcpu(); /* rseq or vDSO: no system call */
    uint32_t tag = cpu < 0 ? 0 : (uint32_t)cpu + 1;
    if (tag && atomic_load_explicit(&ep->me->cpu, memory_order_relaxed) != tag)
        atomic_store_explicit(&ep->me->cpu, tag, memory_order_relaxed);
    return tag;
}

/* Does the peer (last) run on this CPU? Then spinning would only keep it from running: with
 * few cores the scheduler often wakes a task on its waker's CPU. */
static inline bool sharing_cpu(struct shm_endpoint *ep)
{
    uint32_t tag = note_cpu(ep);
    return tag && atomic_load_explicit(&ep->peer->cpu, memory_order_relaxed) == tag;
}

/* Is what `bits` wait for there? */
static bool ready(struct shm_endpoint *ep, unsigned bits)
{
    if (atomic_load_explicit(&ep->peer->closed, memory_order_acquire))
        return true;
    if ((bits & SHM_WAIT_RX) &&
        atomic_load_explicit(&ep->rx->tail, memory_order_acquire) != ep->rx_head)
        return true;
    if ((bits & SHM_WAIT_TX) &&
        (atomic_load_explicit(&ep->tx->head, memory_order_acquire) != ep->seen_head ||
         atomic_load_explicit(&ep->tx->arena_freed, memory_order_acquire) != ep->seen_freed))
        return true;
    return false;
}

int shm_park(struct shm_endpoint *ep, unsigned bits)
{
    bits &= SHM_WAIT_RX | SHM_WAIT_TX;
    if (!bits)
        return -EINVAL;
    STAT_INC(ep, parks);
    atomic_fetch_or_explicit(&ep->me->parked, bits, memory_order_relaxed);
    /* Dekker, the sleeper's half: our bits, this fence, then the check of the ring. */
    atomic_thread_fence(memory_order_seq_cst);
    if (ready(ep, bits)) {
        atomic_fetch_and_explicit(&ep->me->parked, ~bits, memory_order_relaxed);
        return 1;
    }
    return 0;
}

int shm_clear_doorbell(struct shm_endpoint *ep)
{
    if (ep->own_efd < 0)
        return -EINVAL;
    uint64_t count;
    if (read(ep->own_efd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        return -errno;
    return shm_unpark(ep);
}

int shm_unpark(struct shm_endpoint *ep)
{
    /* Relaxed: the caller drains the ring next and parks again (shm_park's fence) before it
     * sleeps; a peer that still sees the old bits only rings once too often. */
    atomic_store_explicit(&ep->me->parked, 0, memory_order_relaxed);
    return 0;
}

/* Sleep until rung or `deadline` (ns, CLOCK_MONOTONIC; negative: none). */
static int sleep_once(struct shm_endpoint *ep, uint32_t word, int64_t deadline)
{
    struct timespec ts, *timeout = NULL;
    if (deadline >= 0) {
        int64_t left = deadline - now_ns();
        if (left <= 0)
            return -ETIMEDOUT;
        ts.tv_sec = left / 1000000000;
        ts.tv_nsec = left % 1000000000;
        timeout = &ts;
    }
    STAT_INC(ep, sleeps);
    if (ep->own_efd >= 0) {
        struct pollfd pfd = {.fd = ep->own_efd, .events = POLLIN};
        int n = ppoll(&pfd, 1, timeout, NULL);
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ETIMEDOUT;
        uint64_t count;
        ssize_t r = read(ep->own_efd, &count, sizeof(count));
        (void)r;
        return 0;
    }
    int rc = futex(&ep->me->futex, FUTEX_WAIT, word, timeout);
    return rc == -EAGAIN ? 0 : rc; /* -EAGAIN: rung between our check and the wait */
}

int shm_poll(struct shm_endpoint *ep, unsigned bits, uint32_t spin)
{
    bits &= SHM_WAIT_RX | SHM_WAIT_TX;
    if (!bits)
        return -EINVAL;
    /* Spinning is not sleeping: while we spin, the peer need not ring us. Bits we had parked
     * are withdrawn now and published again if the spin finds nothing. */
    unsigned parked = atomic_load_explicit(&ep->me->parked, memory_order_relaxed) & bits;
    if (parked)
        atomic_fetch_and_explicit(&ep->me->parked, ~parked, memory_order_relaxed);
    for (uint32_t i = 0;; i++) {
        if (ready(ep, bits)) {
            if (i)
                STAT_INC(ep, spin_hits);
            return 1;
        }
        if (i >= spin)
            break;
        if ((i & (SHM_SPIN_CHECK_CPU - 1)) == 0 && sharing_cpu(ep)) {
            STAT_INC(ep, spins_given_up);
            break;
        }
        cpu_relax();
    }
    return parked ? shm_park(ep, parked) : 0;
}

int shm_wait(struct shm_endpoint *ep, unsigned bits, uint32_t spin, int64_t timeout_ns)
{
    int rc = shm_poll(ep, bits, spin);
    if (rc)
        return rc < 0 ? rc : 0;
    int64_t deadline = timeout_ns < 0 ? -1 : now_ns() + timeout_ns;
    for (;;) {
        /* Read the word before parking: a ring after this point changes it. */
        uint32_t word = atomic_load_explicit(&ep->me->futex, memory_order_acquire);
        if (shm_park(ep, bits))
            return 0;
        int rc = sleep_once(ep, word, deadline);
        atomic_fetch_and_explicit(&ep->me->parked, ~bits, memory_order_relaxed);
        if (ready(ep, bits))
            return 0;
        if (rc == -ETIMEDOUT || rc == -EINTR)
            return rc;
        if (rc < 0)
            return rc;
        /* Woken for the other bit, or spuriously: park again. */
    }
}

/* --- send ------------------------------------------------------------------------------------ */

/* The ring or the arena is full: remember what we saw, so SHM_WAIT_TX can wait for a change. */
static cold int send_full(struct shm_endpoint *ep)
{
    ep->stats.full++;
    ep->seen_head = ep->tx_head_cache;
    ep->seen_freed = ep->tx_freed_cache;
    return -EAGAIN;
}

/* Where a record of `len` bytes goes in the arena, as a counter; -EAGAIN if it does not fit
 * now. A record never wraps: if it would run past the end, it starts at the next lap and the
 * bytes skipped stay in use until the consumer frees this record. */
static cold int arena_reserve(struct shm_endpoint *ep, uint64_t len, uint64_t *start)
{
    const uint64_t A = ep->arena_size;
    uint64_t need = round_up64(len);
    uint64_t alloc = ep->tx_alloc;
    uint64_t off = alloc % A;
    uint64_t begin = off + need > A ? alloc + (A - off) : alloc;
    for (int attempt = 0; attempt < 2; attempt++) {
        uint64_t freed = ep->tx_freed_cache;
        /* Live bytes are [freed, alloc). Empty: anything up to A fits. Otherwise the record
         * must end before the live bytes come round again, at freed + A. */
        if (freed == alloc || begin + need <= freed + A) {
            *start = begin;
            ep->tx_alloc = begin + need;
            return 0;
        }
        /* Acquire: the consumer's reads of the bytes it freed are done. */
        ep->tx_freed_cache = atomic_load_explicit(&ep->tx->arena_freed, memory_order_acquire);
        ep->tx_head_cache = atomic_load_explicit(&ep->tx->head, memory_order_acquire);
        if (ep->tx_freed_cache == freed)
            break;
    }
    return send_full(ep);
}

static cold int send_arena(struct shm_endpoint *ep, struct shm_slot *slot, const void *a,
                           size_t alen, const void *b, size_t blen)
{
    uint64_t start;
    int rc = arena_reserve(ep, alen + blen, &start);
    if (rc)
        return rc;
    uint8_t *dst = ep->tx_arena + start % ep->arena_size;
    memcpy(dst, a, alen);
    if (blen)
        memcpy(dst + alen, b, blen);
    slot->arena_off = start;
    slot->flags = SHM_FLAG_ARENA;
    ep->stats.sent_arena++;
    return 0;
}

int shm_send(struct shm_endpoint *ep, const void *a, size_t alen, const void *b, size_t blen,
             uint32_t user)
{
    if ((alen && !a) || (blen && !b))
        return -EINVAL;
    if (alen > UINT32_MAX || blen > UINT32_MAX - alen)
        return -EMSGSIZE;
    size_t len = alen + blen;
    if (len > shm_max_record(ep))
        return -EMSGSIZE;
    if (unlikely(atomic_load_explicit(&ep->me->closed, memory_order_relaxed) ||
                 atomic_load_explicit(&ep->peer->closed, memory_order_relaxed)))
        return -EPIPE;
    uint64_t t = ep->tx_tail;
    if (unlikely(t - ep->tx_head_cache >= ep->slot_count)) {
        /* Acquire: pairs with the consumer's release of head; it no longer reads the slot. */
        ep->tx_head_cache = atomic_load_explicit(&ep->tx->head, memory_order_acquire);
        if (t - ep->tx_head_cache >= ep->slot_count) {
            ep->tx_freed_cache =
                atomic_load_explicit(&ep->tx->arena_freed, memory_order_acquire);
            return send_full(ep);
        }
    }
    struct shm_slot *slot = slot_at(ep->tx_slots, ep, t);
    if (likely(len <= ep->inline_cap)) {
        if (alen)
            memcpy(slot->data, a, alen);
        if (blen)
            memcpy(slot->data + alen, b, blen);
        slot->flags = 0;
    } else {
        int rc = send_arena(ep, slot, a, alen, b, blen);
        if (rc)
            return rc;
    }
    slot->seq = t;
    slot->len = (uint32_t)len;
    slot->user = user;
    ep->tx_tail = t + 1;
    note_cpu(ep);
    /* Release: the slot and arena bytes above are visible to whoever acquires this tail. */
    atomic_store_explicit(&ep->tx->tail, t + 1, memory_order_release);
    ep->stats.sent++;
    wake_peer_if(ep, SHM_WAIT_RX);
    return 0;
}

/* --- receive --------------------------------------------------------------------------------- */

int shm_peek(struct shm_endpoint *ep, struct shm_msg *msg)
{
    uint64_t h = ep->rx_head;
    /* Acquire: pairs with the producer's release of tail; the slot's contents are visible. */
    uint64_t t = atomic_load_explicit(&ep->rx->tail, memory_order_acquire);
    if (t == h) {
        if (likely(!atomic_load_explicit(&ep->peer->closed, memory_order_acquire)))
            return -EAGAIN;
        /* The peer sets closed after its last tail: having acquired closed, look once more. */
        t = atomic_load_explicit(&ep->rx->tail, memory_order_acquire);
        if (t == h)
            return -EPIPE;
    }
    if (unlikely(t - h > ep->slot_count))
        return -EPROTO;
    struct shm_slot *slot = slot_at(ep->rx_slots, ep, h);
    /* Each field read exactly once into a local: the peer may rewrite the slot at any time,
     * so what is validated is what is used. */
    uint64_t seq = __atomic_load_n(&slot->seq, __ATOMIC_RELAXED);
    uint32_t len = __atomic_load_n(&slot->len, __ATOMIC_RELAXED);
    uint32_t user = __atomic_load_n(&slot->user, __ATOMIC_RELAXED);
    uint32_t flags = __atomic_load_n(&slot->flags, __ATOMIC_RELAXED);
    if (unlikely(seq != h))
        return -EPROTO;
    const uint8_t *data;
    if (flags & SHM_FLAG_ARENA) {
        uint64_t start = __atomic_load_n(&slot->arena_off, __ATOMIC_RELAXED);
        const uint64_t A = ep->arena_size;
        if (!A || start < ep->rx_freed || len > A || start % A + len > A ||
            start - ep->rx_freed > 2 * A)
            return -EPROTO;
        data = ep->rx_arena + start % A;
        ep->peek_freed = start + round_up64(len);
    } else {
        if (len > ep->inline_cap)
            return -EPROTO;
        data = slot->data;
        ep->peek_freed = 0;
    }
    ep->peeked = true;
    msg->seq = seq;
    msg->data = data;
    msg->len = len;
    msg->user = user;
    return 0;
}

int shm_consume(struct shm_endpoint *ep)
{
    if (!ep->peeked)
        return -EINVAL;
    ep->peeked = false;
    if (ep->peek_freed) {
        ep->rx_freed = ep->peek_freed;
        /* Release: our reads of the record's arena bytes happen before the producer reuses
         * them (it acquires arena_freed). */
        atomic_store_explicit(&ep->rx->arena_freed, ep->rx_freed, memory_order_release);
    }
    ep->rx_head++;
    /* Release: likewise for the slot. */
    atomic_store_explicit(&ep->rx->head, ep->rx_head, memory_order_release);
    ep->stats.received++;
    wake_peer_if(ep, SHM_WAIT_TX);
    return 0;
}

int shm_next(struct shm_endpoint *ep, struct shm_msg *msg, unsigned park_bits)
{
    if (ep->peeked)
        shm_consume(ep);
    int rc = shm_peek(ep, msg);
    if (rc != -EAGAIN || !park_bits)
        return rc;
    if (shm_park(ep, park_bits) == 0)
        return -EAGAIN; /* parked: the peer rings us */
    return shm_peek(ep, msg);
}

int shm_shutdown(struct shm_endpoint *ep)
{
    /* Release: every record sent before is visible to a peer that acquires closed. */
    atomic_store_explicit(&ep->me->closed, 1, memory_order_release);
    wake_peer_if(ep, SHM_WAIT_RX | SHM_WAIT_TX);
    return 0;
}
