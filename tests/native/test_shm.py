"""The shm channel's own rules: what a region accepts, what a broken peer gets, its counters,
and the worker's adaptive spin (a pure policy)."""

from __future__ import annotations

import errno
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from faasd_py import native
from faasd_py.datapath.shm import AdaptiveSpin, ShmEndpoint, ShmGeometry, ShmRegion
from faasd_py.protocol import ChannelClosed, ProtocolError
from tests.native.conftest import SMALL, needs_native

pytestmark = needs_native


@dataclass
class Ends:
    """A small region and both its endpoints, in this process."""

    region: ShmRegion
    worker: ShmEndpoint
    sandbox: ShmEndpoint


@pytest.fixture
def ends() -> Iterator[Ends]:
    region = ShmRegion.create(SMALL)
    lib = native.lib
    worker = ShmEndpoint(region.memfd, lib.SHM_WORKER, region.eventfd, -1, 1 << 20)
    sandbox = ShmEndpoint(region.memfd, lib.SHM_SANDBOX, -1, region.eventfd, 1 << 20)
    yield Ends(region, worker, sandbox)
    worker.close()
    sandbox.close()
    region.close()


@pytest.mark.parametrize(
    "geometry",
    [
        ShmGeometry(slot_count=3),
        ShmGeometry(slot_count=1),
        ShmGeometry(slot_size=100),
        ShmGeometry(slot_size=64),
        ShmGeometry(arena_size=1000),
    ],
)
def test_a_bad_geometry_is_einval(geometry: ShmGeometry) -> None:
    with pytest.raises(OSError) as caught:
        ShmRegion.create(geometry)
    assert caught.value.errno == errno.EINVAL
    assert caught.value.strerror == os.strerror(errno.EINVAL)


def test_only_a_sealed_region_is_accepted() -> None:
    fd = os.memfd_create("plain")
    try:
        os.ftruncate(fd, 1 << 20)
        with pytest.raises(OSError) as caught:
            ShmEndpoint(fd, native.lib.SHM_WORKER, -1, -1, 1 << 20)
        assert caught.value.errno == errno.EPERM
    finally:
        os.close(fd)
    region = ShmRegion.create(SMALL)
    try:
        with pytest.raises(OSError) as shrink:
            os.ftruncate(region.memfd, 4096)
        assert shrink.value.errno == errno.EPERM
    finally:
        region.close()


def test_records_inline_and_in_the_arena_are_counted(ends: Ends) -> None:
    worker, sandbox = ends.worker, ends.sandbox
    for body in (b"", b"x" * 100, b"y" * 30_000):
        assert worker.try_send(*worker.encode({"op": "invoke", "body": body}))
        message = sandbox.poll()
        assert message is not None and message["body"] == body
    assert sandbox.poll() is None
    stats = worker.statistics()
    assert (stats.sent, stats.sent_arena) == (3, 1)
    assert sandbox.statistics().received == 3


def test_a_full_ring_refuses_then_takes_again(ends: Ends) -> None:
    worker, sandbox = ends.worker, ends.sandbox
    record = worker.encode({"op": "invoke", "id": 1})
    assert all(worker.try_send(*record) for _ in range(SMALL.slot_count))
    assert not worker.try_send(*record)
    assert worker.statistics().full == 1
    assert not worker.park(native.lib.SHM_WAIT_TX)  # parked: nothing moved yet
    assert sandbox.poll() is not None
    assert sandbox.poll() is not None  # the first is released by this call
    assert worker.park(native.lib.SHM_WAIT_TX)  # room again
    assert worker.try_send(*record)


def test_a_doorbell_rings_only_for_a_parked_end_and_unpark_withdraws(ends: Ends) -> None:
    """The worker's doorbell engine consumes the eventfd itself, then `unpark`s: from then on
    the sandbox's sends ring no more until the worker parks again."""
    worker, sandbox = ends.worker, ends.sandbox
    rx = native.lib.SHM_WAIT_RX
    record = sandbox.encode({"op": "result", "id": 1})
    assert not worker.park(rx)
    assert sandbox.try_send(*record)
    assert os.eventfd_read(ends.region.eventfd) == 1  # what the engine does
    worker.unpark()
    assert worker.poll() is not None
    assert sandbox.try_send(*record)
    assert sandbox.statistics().doorbells == 1
    with pytest.raises(BlockingIOError):
        os.eventfd_read(ends.region.eventfd)
    assert worker.park(rx)  # a record is there: not parked
    assert worker.poll() is not None
    assert worker.poll() is None  # releases the record it returned last
    assert not worker.park(rx)
    assert sandbox.try_send(*record)
    assert sandbox.statistics().doorbells == 2


def test_a_peer_that_scribbles_on_the_ring_is_a_protocol_error(ends: Ends) -> None:
    assert ends.worker.try_send(*ends.worker.encode({"op": "invoke", "id": 1}))
    with mmap.mmap(ends.region.memfd, 0) as memory:
        # The first slot of ring 0 starts after the control page; its sequence number must
        # equal its index.
        struct.pack_into("<Q", memory, 4096, 99)
    with pytest.raises(ProtocolError, match="invalid record"):
        ends.sandbox.poll()


def test_undecodable_bytes_are_a_protocol_error(ends: Ends) -> None:
    worker, sandbox = ends.worker, ends.sandbox
    assert worker.try_send(b"\xc1", b"", 1)  # 0xc1 is never used in msgpack
    with pytest.raises(ProtocolError, match="undecodable"):
        sandbox.poll()
    assert worker.try_send(b"\x93\x01\x02\x03", b"", 4)  # a list, not a map
    with pytest.raises(ProtocolError, match="map with an 'op' key"):
        sandbox.poll()
    assert worker.try_send(b"\x80", b"", 7)  # the user word says more than there is
    with pytest.raises(ProtocolError, match="length"):
        sandbox.poll()


def test_a_closed_endpoint_says_so(ends: Ends) -> None:
    ends.worker.close()
    with pytest.raises(ChannelClosed):
        ends.sandbox.poll()
    with pytest.raises(ChannelClosed):
        ends.sandbox.try_send(b"\x80", b"", 1)
    ends.sandbox.close()
    with pytest.raises(ChannelClosed):
        ends.sandbox.poll()


def test_features_are_reported() -> None:
    assert native.FEATURES.memfd and native.FEATURES.eventfd and native.FEATURES.futex
    assert "memfd" in native.describe()


# --- the worker's adaptive spin ------------------------------------------------------------


def test_adaptive_spin_halves_on_misses_and_is_full_after_a_hit() -> None:
    spin = AdaptiveSpin(1024, minimum=16, probe_every=1000)
    budgets = []
    for _ in range(8):
        budgets.append(spin.budget())
        spin.record(False)
    assert budgets == [1024, 512, 256, 128, 64, 32, 16, 16]
    spin.record(True)
    assert spin.budget() == 1024
    assert (spin.spins, spin.hits) == (9, 1)


def test_adaptive_spin_probes_at_full_length_now_and_then() -> None:
    spin = AdaptiveSpin(1000, minimum=10, probe_every=4)
    for _ in range(20):
        spin.record(False)
    assert [spin.budget() for _ in range(8)] == [10, 10, 10, 1000, 10, 10, 10, 1000]


def test_no_spin_means_no_spin() -> None:
    spin = AdaptiveSpin(0)
    assert spin.budget() == 0
    spin.record(True)
    assert spin.budget() == 0
