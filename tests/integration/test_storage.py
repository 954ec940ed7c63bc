"""Backing stores against a real Redis (started on a free port) and the embedded SQLite store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from faasd_py.errors import StorageUnavailable
from faasd_py.storage import LatencyModel, LatencyStore, open_store
from faasd_py.storage._redis import RedisStore, redact
from tests.integration._redis import RedisServer, StoreFactory, free_port, make_store, redis_server

__all__ = ["make_store", "redis_server"]


async def test_every_write_gets_a_new_version_kept_with_its_bytes(make_store: StoreFactory) -> None:
    store = make_store()
    assert await store.get("app", "k") is None
    assert await store.version("app", "k") is None
    v1 = await store.put("app", "k", b"one")
    v2 = await store.put("app", "k", b"two")
    assert v2 > v1
    got = await store.get("app", "k")
    assert got is not None and (got.data, got.version) == (b"two", v2)
    assert await store.version("app", "k") == v2
    assert await store.delete("app", "k")
    assert not await store.delete("app", "k")
    assert not await store.exists("app", "k")
    # Deleted and written again: a version never seen before, never an old one come back.
    v3 = await store.put("app", "k", b"one")
    assert v3 > v2 and await store.exists("app", "k")


async def test_get_many_reads_several_objects_in_one_call(make_store: StoreFactory) -> None:
    store = make_store()
    v1 = await store.put("app", "a", b"1")
    v2 = await store.put("app", "b", b"22")
    await store.put("other", "c", b"not mine")
    found = await store.get_many("app", ["b", "missing", "a", "c"])
    assert [(f.data, f.version) if f else None for f in found] == [
        (b"22", v2),
        None,
        (b"1", v1),
        None,
    ]
    assert await store.get_many("app", []) == []


async def test_a_second_client_sees_the_first_ones_writes(make_store: StoreFactory) -> None:
    writer, reader = make_store(), make_store()
    version = await writer.put("app", "shared", b"x")
    assert await reader.version("app", "shared") == version


async def test_apps_cannot_see_each_others_objects(make_store: StoreFactory) -> None:
    store = make_store()
    await store.put("a", "secret", b"of a")
    # An app name and key chosen to spell the other app's key in a naive "app:key" layout.
    await store.put("a:secret", "x", b"other")
    assert await store.get("b", "secret") is None
    assert not await store.exists("b", "secret")
    assert await store.list("b") == []
    assert await store.list("a") == ["secret"]
    assert await store.get("a", "secret:x") is None
    await store.delete("b", "secret")
    assert await store.exists("a", "secret")


async def test_list_by_prefix_is_sorted_and_literal(make_store: StoreFactory) -> None:
    store = make_store()
    for key in ["results/2", "results/1", "results%/x", "results_", "models/w", "résumé"]:
        await store.put("app", key, b"")
    assert await store.list("app", "results/") == ["results/1", "results/2"]
    assert await store.list("app", "results%") == ["results%/x"]
    assert await store.list("app", "ré") == ["résumé"]
    assert len(await store.list("app")) == 6


@pytest.mark.parametrize("size", [0, 64 * 1024 * 1024])
async def test_objects_of_zero_bytes_and_64_mib(make_store: StoreFactory, size: int) -> None:
    store = make_store()
    data = bytes(range(256)) * (size // 256)
    version = await store.put("app", "blob", data)
    got = await store.get("app", "blob")
    assert got is not None and got.version == version and got.data == data


async def test_bad_keys_are_refused(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(ValueError):
        await store.put("app", "", b"x")
    with pytest.raises(ValueError):
        await store.get("app", "k" * 2000)


async def test_redis_going_away_raises_storage_unavailable_then_recovers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    store = open_store(redis_server.url, tmp_path)
    try:
        before = await store.put("app", "k", b"v")
        redis_server.stop()
        for call in (store.version("app", "k"), store.put("app", "k", b"w")):
            with pytest.raises(StorageUnavailable) as caught:
                await call
            assert caught.value.status == 503
            assert f"127.0.0.1:{redis_server.port}" in caught.value.message
        redis_server.start()  # empty: no persistence
        assert await store.version("app", "k") is None
        # Its counters are gone too, yet a new write's version is above every earlier one.
        assert await store.put("app", "k", b"back") > before
    finally:
        await store.close()


async def test_unreachable_redis_fails_fast_with_the_clear_error(tmp_path: Path) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StorageUnavailable, match="storage unavailable"):
            await store.get("app", "k")
    finally:
        await store.close()


async def test_an_unusable_sqlite_file_raises_storage_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite3").mkdir()
    store = open_store(f"sqlite://{tmp_path / 'dir.sqlite3'}", tmp_path)
    try:
        with pytest.raises(StorageUnavailable, match=r"sqlite://.*dir\.sqlite3"):
            await store.put("app", "k", b"v")
    finally:
        await store.close()


async def test_added_latency_applies_to_every_call(tmp_path: Path) -> None:
    store = open_store(None, tmp_path, latency=0.02)
    assert isinstance(store, LatencyStore) and store.name.endswith("(+20ms per data call)")
    try:
        start = time.monotonic()
        await store.put("app", "k", b"v")
        await store.version("app", "k")
        await store.get("app", "k")
        assert time.monotonic() - start >= 0.06
    finally:
        await store.close()


def test_a_store_without_added_delays_is_not_wrapped(tmp_path: Path) -> None:
    assert not isinstance(open_store(None, tmp_path, LatencyModel()), LatencyStore)
    assert isinstance(open_store(None, tmp_path, LatencyModel(bandwidth=1e6)), LatencyStore)


class Sleeps:
    """Stands in for asyncio.sleep: records what a LatencyStore waits, sleeps not at all."""

    def __init__(self) -> None:
        self.waited: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waited.append(seconds)

    def take(self) -> list[float]:
        taken, self.waited = self.waited, []
        return taken


async def test_data_calls_pay_latency_and_size_version_checks_their_own(tmp_path: Path) -> None:
    """The faithful model: 5 ms and 1 MB/s per data call, version checks (and exists, a HEAD)
    at 1 ms; one sleep per call, none for a call that adds nothing."""
    sleeps = Sleeps()
    inner = open_store(f"sqlite://{tmp_path / 'o.sqlite3'}", tmp_path)
    store = LatencyStore(inner, LatencyModel(0.005, 0.001, 1e6), sleep=sleeps)
    assert store.name.endswith("(+5ms per data call, 1MB/s, version checks +1ms)")
    try:
        await store.put("app", "big", b"x" * 30_000)
        await store.put("app", "small", b"y" * 100)
        assert sleeps.take() == pytest.approx([0.035, 0.0051])
        got = await store.get("app", "big")
        assert got is not None and len(got.data) == 30_000
        assert await store.get("app", "absent") is None
        assert sleeps.take() == pytest.approx([0.035, 0.005])
        assert [v is not None for v in await store.get_many("app", ["big", "small", "no"])] == [
            True,
            True,
            False,
        ]
        assert sleeps.take() == pytest.approx([0.005 + 0.0301])  # one stream, bytes summed
        assert await store.version("app", "big") is not None
        assert await store.exists("app", "small")
        assert sleeps.take() == pytest.approx([0.001, 0.001])
        assert await store.list("app") == ["big", "small"]
        assert sleeps.take() == pytest.approx([0.005 + 8e-6])  # the names it moved
        assert await store.delete("app", "small")
        assert sleeps.take() == pytest.approx([0.005])
    finally:
        await store.close()


async def test_version_checks_near_add_no_sleep_at_all(tmp_path: Path) -> None:
    sleeps = Sleeps()
    store = LatencyStore(open_store(None, tmp_path), LatencyModel(0.005, 0.0), sleep=sleeps)
    try:
        await store.put("app", "k", b"v")
        sleeps.take()
        assert await store.version("app", "k") is not None and await store.exists("app", "k")
        assert sleeps.take() == []
    finally:
        await store.close()


async def test_the_conservative_model_charges_every_call_alike(tmp_path: Path) -> None:
    sleeps = Sleeps()
    store = LatencyStore(open_store(None, tmp_path), 0.005, sleep=sleeps)
    assert store.version_latency == store.latency == 0.005
    try:
        await store.put("app", "k", b"v" * 1_000_000)
        await store.version("app", "k")
        await store.exists("app", "k")
        await store.get("app", "k")
        assert sleeps.take() == [0.005] * 4  # size is free without a bandwidth
    finally:
        await store.close()


def test_urls_name_their_store_without_a_password(tmp_path: Path) -> None:
    assert redact("redis://user:pw@host:6380/1") == "redis://user:***@host:6380/1"
    assert redact("redis://host:6379") == "redis://host:6379"
    with pytest.raises(ValueError, match="redis://"):
        open_store("s3://bucket", tmp_path)
