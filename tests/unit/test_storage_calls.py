"""context.storage in the runtime against StorageService in the worker, with the messages
between them encoded and decoded as frames (no channel, no process)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from faasd_py.cache import AppCache
from faasd_py.cache._service import StorageService
from faasd_py.errors import StorageUnavailable
from faasd_py.protocol import FrameDecoder, StorageCall, StorageReply, encode
from faasd_py.runtime._storage import Storage
from faasd_py.storage import Quota, Usage, Versioned


class MemoryStore:
    """An ObjectStore in a dict; `down` makes every call fail as a dead store's would."""

    name = "memory://test"

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Versioned] = {}
        self.last = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailable(self.name, "connection refused")

    async def get(self, app: str, key: str) -> Versioned | None:
        self._check()
        return self.objects.get((app, key))

    async def get_many(self, app: str, keys: Sequence[str]) -> list[Versioned | None]:
        return [await self.get(app, key) for key in keys]

    async def version(self, app: str, key: str) -> int | None:
        found = await self.get(app, key)
        return None if found is None else found.version

    async def put(self, app: str, key: str, data: bytes, quota: Quota | None = None) -> int:
        self._check()
        if not key:
            raise ValueError("a storage key must be a non-empty string")
        old = self.objects.get((app, key))
        usage = await self.usage(app)
        old_size = None if old is None else len(old.data)
        refused = None if quota is None else quota.refusal(usage, old_size, len(data))
        if quota is not None and refused is not None:
            raise quota.exceeded(app, refused, usage, len(data))
        self.last += 1
        self.objects[(app, key)] = Versioned(data, self.last)
        return self.last

    async def delete(self, app: str, key: str) -> bool:
        self._check()
        return self.objects.pop((app, key), None) is not None

    async def exists(self, app: str, key: str) -> bool:
        return await self.get(app, key) is not None

    async def list(self, app: str, prefix: str = "") -> list[str]:
        self._check()
        return sorted(k for a, k in self.objects if a == app and k.startswith(prefix))

    async def usage(self, app: str) -> Usage:
        mine = [v.data for (a, _), v in self.objects.items() if a == app]
        return Usage(sum(map(len, mine)), len(mine))

    def known_usage(self) -> dict[str, Usage]:
        return {}

    async def close(self) -> None:
        pass


class Wire:
    """A Transport that carries each call as frames to the service and its reply back."""

    def __init__(self, service: StorageService) -> None:
        self.service = service
        self.loop = asyncio.new_event_loop()
        self.decoder = FrameDecoder(1 << 24)

    def request(self, call: StorageCall) -> StorageReply:
        replies: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            replies.extend(self.decoder.feed(encode(message)))

        (message,) = self.decoder.feed(encode(call.to_wire()))
        self.loop.run_until_complete(self.service.handle(message, send))
        (reply,) = replies
        assert reply["op"] == "storage_reply" and reply["id"] == call.id
        return StorageReply.from_wire(reply)


@pytest.fixture
def setup() -> Iterator[tuple[Storage, MemoryStore, AppCache]]:
    store = MemoryStore()
    cache = AppCache("app", store, capacity=1 << 20, bypass_bytes=1 << 20)
    wire = Wire(StorageService(cache, max_value=1000))
    yield Storage(wire, max_value=1000), store, cache
    wire.loop.close()


def test_the_calls_a_function_author_makes(setup: tuple[Storage, MemoryStore, AppCache]) -> None:
    storage, store, cache = setup
    assert storage.get("k") is None
    storage.put("k", b"bytes")
    storage.put("results/1", "text")
    assert storage.get("k") == b"bytes"
    assert storage.get("results/1") == b"text"
    assert storage.exists("k") and not storage.exists("nope")
    assert storage.list("results/") == ["results/1"]
    assert storage.list() == ["k", "results/1"]
    assert storage.delete("k") and not storage.delete("k")
    assert store.objects[("app", "results/1")].data == b"text"
    assert cache.statistics().hits == 2  # both gets after the puts were served from the cache


def test_a_dead_store_raises_storage_unavailable_naming_it(
    setup: tuple[Storage, MemoryStore, AppCache],
) -> None:
    storage, store, _ = setup
    storage.put("k", b"v")
    store.down = True
    with pytest.raises(StorageUnavailable) as caught:
        storage.get("k")
    assert caught.value.status == 503
    assert caught.value.message.startswith("storage unavailable (memory://test)")
    with pytest.raises(StorageUnavailable):
        storage.put("k", b"w")
    store.down = False
    assert storage.get("k") == b"v"


def test_objects_larger_than_the_channel_carries_are_refused_clearly(
    setup: tuple[Storage, MemoryStore, AppCache],
) -> None:
    storage, store, _ = setup
    with pytest.raises(ValueError, match="larger than an instance's channel carries"):
        storage.put("big", b"x" * 1001)  # refused before it is sent
    wire = Wire(StorageService(AppCache("a", store, capacity=1, bypass_bytes=1), 1000))
    try:
        with pytest.raises(ValueError, match="larger than an instance's channel carries"):
            Storage(wire).put("big", b"x" * 1001)  # the worker refuses it too
    finally:
        wire.loop.close()
    store.objects[("app", "big")] = Versioned(b"x" * 1001, 99)
    with pytest.raises(ValueError, match="1001 bytes"):
        storage.get("big")


def test_bad_keys_and_calls(setup: tuple[Storage, MemoryStore, AppCache]) -> None:
    storage, _, _ = setup
    with pytest.raises(ValueError, match="non-empty"):
        storage.put("", b"x")
    with pytest.raises(TypeError):
        storage.get(3)  # type: ignore[arg-type]
