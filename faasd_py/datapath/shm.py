"""The shared-memory channel's core (DESIGN.md's `shm` mode): regions and endpoints over the C
rings of native/shm.c, and how a message becomes records. No asyncio: the sandbox runtime imports
this, and the worker's end (`faasd_py.datapath.channel_shm.ShmChannel`) builds on it.

The worker makes a region per instance (`ShmRegion`: a sealed memfd and the worker's eventfd
doorbell) and hands both fds to the instance process; each side attaches an `ShmEndpoint`.

A message travels as one record: its msgpack map and, for a body above 8 KiB, the body's bytes
as they are after the map, so a large body is copied once into the ring and once out of it
(into the `bytes` the handler gets), never packed or joined; a small one is cheaper to pack
with the rest. The record's 32-bit user word carries the map's length and flags. A message
larger than the biggest record goes as fragments, reassembled on receipt (the rare path).
Records are read in place: msgpack decodes straight from the shared memory, and the record is
released by the next read.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from faasd_py import native
from faasd_py.errors import NativeUnavailable
from faasd_py.protocol import ChannelClosed, ProtocolError

__all__ = [
    "DEFAULT_GEOMETRY",
    "AdaptiveSpin",
    "ShmEndpoint",
    "ShmGeometry",
    "ShmRegion",
    "ShmStatistics",
    "require_native",
]

# The record's user word: the length of the msgpack map, and what follows it.
_HAS_BODY = 1 << 30  # the rest of the record is the message's "body"
_FRAGMENT_FIRST = 1 << 31  # a fragmented message starts: a _FRAGMENT header, then its bytes
_FRAGMENT_MORE = 1 << 29  # the next bytes of a fragmented message
_META_MASK = _FRAGMENT_MORE - 1
_FRAGMENT = struct.Struct("<IQ")  # the whole message's user word, and its length
_EMPTY = memoryview(b"")
_SPECIAL = _HAS_BODY | _FRAGMENT_FIRST | _FRAGMENT_MORE
# A body above this many bytes is not packed with the map but follows it in the record.
_SPLIT_BODY = 8192
_BUFFERS = (bytes, bytearray, memoryview)
_unpackb = msgpack.unpackb

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class ShmGeometry:
    """Sizes of a region: `slot_count` slots of `slot_size` bytes each way (a slot's payload is
    `slot_size - 64` bytes inline), and an arena of `arena_size` bytes each way for larger
    records. The memory is only touched as it is used."""

    slot_count: int = 64
    slot_size: int = 2048
    arena_size: int = 4 * 1024 * 1024


DEFAULT_GEOMETRY = ShmGeometry()


@dataclass(frozen=True)
class ShmStatistics:
    """Counters of one end of a channel (see struct shm_stats)."""

    sent: int
    received: int
    sent_arena: int
    full: int
    doorbells: int
    parks: int
    sleeps: int
    spin_hits: int
    spins_given_up: int


class AdaptiveSpin:
    """How long an event loop may spin for an expected reply before it parks: a pure policy.

    After a hit (the reply came within the budget) the next budget is the full `maximum`; after
    a miss it halves, down to `minimum`, so a loaded machine (where replies come late and the
    loop has other work) soon stops paying for spins. Every `probe_every`-th spin is full
    length, which notices when replies become fast again. `maximum` 0 turns spinning off.
    """

    def __init__(self, maximum: int, minimum: int = 16, probe_every: int = 32) -> None:
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        self.probe_every = probe_every
        self._budget = maximum
        self._count = 0
        self.spins = 0
        self.hits = 0

    def budget(self) -> int:
        """Iterations for the next spin."""
        self._count += 1
        if self._count % self.probe_every == 0:
            return self.maximum
        return self._budget

    def record(self, hit: bool) -> None:
        self.spins += 1
        if hit:
            self.hits += 1
            self._budget = self.maximum
        else:
            self._budget = max(self.minimum, self._budget // 2)


def require_native() -> Any:
    """The cffi `lib`, or NativeUnavailable saying why there is none."""
    if not native.HAS_NATIVE:
        raise NativeUnavailable(
            f"the shm channel needs the native shim, which is {native.REASON}; "
            "use the socket channel (--channel socket)"
        )
    return native.lib


class ShmRegion:
    """A region for one instance: the memfd and the worker's eventfd, both close-on-exec (the
    launcher passes them to the instance with pass_fds)."""

    def __init__(self, memfd: int, eventfd: int) -> None:
        self.memfd = memfd
        self.eventfd = eventfd

    @classmethod
    def create(cls, geometry: ShmGeometry = DEFAULT_GEOMETRY) -> ShmRegion:
        lib = require_native()
        g = native.ffi.new("struct shm_geometry *")
        g.slot_count, g.slot_size, g.arena_size = (
            geometry.slot_count,
            geometry.slot_size,
            geometry.arena_size,
        )
        memfd = native.check(lib.shm_create(g))
        try:
            eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError:
            os.close(memfd)
            raise
        return cls(memfd, eventfd)

    def close_memfd(self) -> None:
        """Once both ends are attached (mapped), the memfd itself is no longer needed."""
        if self.memfd >= 0:
            os.close(self.memfd)
            self.memfd = -1

    def close(self) -> None:
        """Close both fds (the eventfd too: only when no ShmChannel took it over)."""
        self.close_memfd()
        if self.eventfd >= 0:
            os.close(self.eventfd)
            self.eventfd = -1


class ShmEndpoint:
    """One attached end: typed calls into the C shim, -errno turned into exceptions."""

    def __init__(self, memfd: int, side: int, own_efd: int, peer_efd: int, max_frame: int) -> None:
        """Attach `memfd` as `side` (lib.SHM_WORKER / lib.SHM_SANDBOX); see shm_attach."""
        self._lib = lib = require_native()
        self._ffi = ffi = native.ffi
        out = ffi.new("struct shm_endpoint **")
        native.check(lib.shm_attach(memfd, side, own_efd, peer_efd, out))
        self._ep: Any = out[0]
        self._msg = ffi.new("struct shm_msg *")
        # One sending thread per endpoint: a Packer of its own saves making one per message.
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self.max_frame = max_frame
        self.max_record = int(lib.shm_max_record(self._ep))
        self.inline_capacity = int(lib.shm_inline_capacity(self._ep))
        # Fragments: half the arena, so one can be written while the peer reads another.
        self.fragment_size = max(self.inline_capacity, self.max_record // 2)
        self._assembly: bytearray | None = None
        self._assembly_fill = 0
        self._assembly_user = 0

    @property
    def attached(self) -> bool:
        return self._ep is not None

    # --- send ----------------------------------------------------------------------------------

    def encode(self, message: dict[str, Any]) -> tuple[bytes, Buffer, int]:
        """(msgpack map, body, user word) of a message. A large body stays out of the map and
        goes into the record as it is; a small one is cheaper to pack with the rest."""
        body = message.get("body")
        if body.__class__ in _BUFFERS and len(body) > _SPLIT_BODY:
            meta: bytes = self._pack({k: v for k, v in message.items() if k != "body"})
            user = len(meta) | _HAS_BODY
        else:
            meta = self._pack(message)
            user = len(meta)
            body = b""
        total = len(meta) + len(body)
        if total > self.max_frame or len(meta) > _META_MASK:
            raise ProtocolError(f"message of {total} bytes exceeds the limit of {self.max_frame}")
        return meta, body, user

    def fragments(
        self, meta: bytes, body: Buffer, user: int
    ) -> Iterator[tuple[memoryview, memoryview, int]]:
        """The records of a message too large for one (the rare path): each carries at most
        fragment_size bytes of a fragment header, the map and the body, in that order."""
        head = memoryview(_FRAGMENT.pack(user, len(meta) + len(body)) + meta)
        body = memoryview(body).cast("B")
        flag, step = _FRAGMENT_FIRST, self.fragment_size
        while head:
            part, head = head[:step], head[step:]
            room = step - len(part)
            yield part, body[:room], flag
            body, flag = body[room:], _FRAGMENT_MORE
        while body:
            yield _EMPTY, body[:step], _FRAGMENT_MORE
            body = body[step:]

    def try_send(self, head: Buffer, body: Buffer, user: int) -> bool:
        """Publish one record (head, then body); False if the ring or arena is full (nothing
        was sent). The bytes go straight from the Python buffers into the ring."""
        if self._ep is None:
            raise ChannelClosed("the channel is closed")
        # bytes pass to a char* parameter as they are; other buffers by address.
        a = head if type(head) is bytes else self._ffi.from_buffer(head)
        b = body if type(body) is bytes else self._ffi.from_buffer(body)
        rc = self._lib.shm_send(self._ep, a, len(head), b, len(body), user)
        if rc == 0:
            return True
        if rc == -errno.EAGAIN:
            return False
        if rc == -errno.EPIPE:
            raise ChannelClosed("the peer closed the channel")
        native.check(rc)
        raise AssertionError("unreachable")

    # --- receive -------------------------------------------------------------------------------

    def poll(self, park_bits: int = 0) -> dict[str, Any] | None:
        """The next whole message if one is there, else None (and, with `park_bits`, parked).
        ChannelClosed once the peer has closed and everything it sent has been read;
        ProtocolError for a malformed one.

        The message is decoded straight from the ring; its record is released by the next
        call (shm_next), one C call per message."""
        next_record, ep, msg = self._lib.shm_next, self._ep, self._msg
        while True:
            if ep is None:
                raise ChannelClosed("the channel is closed")
            rc = next_record(ep, msg, park_bits)
            if rc:
                if rc == -errno.EAGAIN:
                    return None
                if rc == -errno.EPIPE:
                    raise ChannelClosed("the peer closed the channel")
                if rc == -errno.EPROTO:
                    raise ProtocolError("the peer wrote an invalid record into the shared ring")
                native.check(rc)
            user = msg.user
            if (user & _SPECIAL) == 0 and self._assembly is None:
                # The common case: one record holding a whole map, decoded in place.
                return _decode(self._ffi.buffer(msg.data, msg.len), user)
            message = self._take(memoryview(self._ffi.buffer(msg.data, msg.len)), user)
            if message is not None:
                return message

    def _take(self, view: memoryview, user: int) -> dict[str, Any] | None:
        if user & _FRAGMENT_FIRST:
            if len(view) < _FRAGMENT.size:
                raise ProtocolError("a fragment header is cut short")
            whole, total = _FRAGMENT.unpack_from(view)
            if total > self.max_frame:
                raise ProtocolError(
                    f"message of {total} bytes exceeds the limit of {self.max_frame}"
                )
            self._assembly, self._assembly_fill, self._assembly_user = bytearray(total), 0, whole
            return self._assemble(view[_FRAGMENT.size :])
        if user & _FRAGMENT_MORE:
            if self._assembly is None:
                raise ProtocolError("a fragment arrived outside a fragmented message")
            return self._assemble(view)
        if self._assembly is not None:
            raise ProtocolError("a fragmented message was cut short")
        return _decode(view, user)

    def _assemble(self, part: memoryview) -> dict[str, Any] | None:
        assert self._assembly is not None
        start, end = self._assembly_fill, self._assembly_fill + len(part)
        if end > len(self._assembly):
            raise ProtocolError("fragments run past the message's length")
        self._assembly[start:end] = part
        self._assembly_fill = end
        if end < len(self._assembly):
            return None
        whole, self._assembly = memoryview(self._assembly), None
        return _decode(whole, self._assembly_user)

    # --- parking -------------------------------------------------------------------------------

    def park(self, bits: int) -> bool:
        """Publish parked bits; True if what they wait for is already there (not parked)."""
        return self._ep is not None and bool(native.check(self._lib.shm_park(self._ep, bits)))

    def poll_spin(self, bits: int, spin: int) -> bool:
        """Spin up to `spin` iterations (GIL released) until ready; never parks."""
        return self._ep is not None and bool(native.check(self._lib.shm_poll(self._ep, bits, spin)))

    def clear_doorbell(self) -> None:
        if self._ep is not None:
            native.check(self._lib.shm_clear_doorbell(self._ep))

    def unpark(self) -> None:
        """Withdraw the parked bits after a doorbell whose count was already consumed (the
        worker's doorbell engine reads the eventfd itself)."""
        if self._ep is not None:
            self._lib.shm_unpark(self._ep)

    def wait(self, bits: int, spin: int, timeout: float | None) -> bool:
        """Block (GIL released) until ready; False on timeout or a signal."""
        if self._ep is None:
            raise ChannelClosed("the channel is closed")
        ns = -1 if timeout is None else int(timeout * 1e9)
        rc = self._lib.shm_wait(self._ep, bits, spin, ns)
        if rc in (-errno.ETIMEDOUT, -errno.EINTR):
            return False
        native.check(rc)
        return True

    def statistics(self) -> ShmStatistics:
        stats = self._ffi.new("struct shm_stats *")
        if self._ep is not None:
            self._lib.shm_get_stats(self._ep, stats)
        return ShmStatistics(
            sent=stats.sent,
            received=stats.received,
            sent_arena=stats.sent_arena,
            full=stats.full,
            doorbells=stats.doorbells,
            parks=stats.parks,
            sleeps=stats.sleeps,
            spin_hits=stats.spin_hits,
            spins_given_up=stats.spins_given_up,
        )

    def shutdown(self) -> None:
        """Tell the peer this end is done (it reads what was sent, then the end)."""
        if self._ep is not None:
            self._lib.shm_shutdown(self._ep)

    def close(self) -> None:
        """Shut down, then unmap: not while another thread is inside a call. Idempotent."""
        if self._ep is not None:
            self._lib.shm_shutdown(self._ep)
            self._lib.shm_detach(self._ep)
            self._ep = None


def _decode(record: Any, user: int) -> dict[str, Any]:
    """The message in a record (a buffer): its map, and its body if that follows the map."""
    meta_len = user & _META_MASK
    body = None
    if user & _HAS_BODY:
        if meta_len > len(record):
            raise ProtocolError("a record is shorter than its header says")
        view = memoryview(record)
        record, body = view[:meta_len], bytes(view[meta_len:])
    elif meta_len != len(record):
        raise ProtocolError("a record's length does not match its header")
    try:
        message = _unpackb(record, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"undecodable record: {exc}") from exc
    if message.__class__ is not dict or "op" not in message:
        raise ProtocolError("a message must be a map with an 'op' key")
    if body is not None:
        message["body"] = body
    return message
