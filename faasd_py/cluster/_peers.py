"""The Faa$T cache across an app's workers: who owns a key, and asking the owner.

When an app is placed on several workers its cache spans them, as Faa$T's does: each object has
one owner among the app's workers, and a read that misses the local cache asks the owner before
the store (faasd_py.cache._cache holds the read path and its version check).

- `owner(key, workers)` is rendezvous (highest random weight) hashing: every worker scores the
  key, the highest score wins. It needs no ring or shared state, every worker computes the same
  answer from the same list, and when a worker leaves only the keys it owned move (to their
  second-best worker); when one joins it takes only the keys it now scores highest on.
- `CachePeers` is the worker host's `faasd_py.cache.Peers`: the app -> workers map (kept from
  the placements the host reads each heartbeat, less workers without a live lease) and one
  transport client per peer. A peer's answer is awaited at most `timeout` seconds, connecting
  included; a peer that failed to answer is left alone for `backoff` seconds, so while it is
  down reads go to the store without paying the wait each time. A peer never fails a read.
- `cache_get_op(cache_of)` serves the `cache_get` op on the owner:
      cache_get {app, key, version} -> {data: bytes | None}
  the bytes of `key` at `version` or newer from the app's cache here, else from the store
  (then cached here), or None (the app's cache is not loaded here, nothing that fresh, or too
  large to cache): the asking worker reads the store itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from faasd_py.cluster._transport import RemoteError, RpcClient
from faasd_py.errors import FaasdError

logger = logging.getLogger(__name__)

OP = "cache_get"
# Seconds a read waits for a key's owner before it reads the store itself: the owner normally
# answers in about a millisecond; a busy one that takes longer costs little more than the store.
PEER_TIMEOUT = 0.5
# Seconds a peer that did not answer is not asked again.
PEER_BACKOFF = 2.0

Key = Callable[[bytes], bytes]


def owner(key: str, workers: Sequence[str]) -> str:
    """The worker of `workers` that owns `key`: the one with the highest hash of (worker, key)
    (ties, which need equal 64-bit hashes, go to the greater name)."""
    if not workers:
        raise ValueError("owner() needs at least one worker")
    encoded = key.encode("utf-8", "surrogatepass")
    return max(workers, key=lambda worker: (_score(worker, encoded), worker))


def _score(worker: str, key: bytes) -> int:
    digest = hashlib.blake2b(worker.encode("utf-8", "surrogatepass"), digest_size=8)
    digest.update(b"\0")  # (a, bc) and (ab, c) must differ
    digest.update(key)
    return int.from_bytes(digest.digest(), "big")


class CachePeers:
    """An app's other workers as this worker's caches see them (faasd_py.cache.Peers)."""

    def __init__(
        self,
        name: str,
        key: Key,
        *,
        max_frame: int,
        timeout: float = PEER_TIMEOUT,
        backoff: float = PEER_BACKOFF,
    ) -> None:
        self.name = name
        self._key = key
        self._max_frame = max_frame
        self.timeout = timeout
        self.backoff = backoff
        self._apps: dict[str, tuple[str, ...]] = {}
        self._addresses: dict[str, str] = {}
        self._clients: dict[str, RpcClient] = {}
        self._quiet_until: dict[str, float] = {}  # peer -> monotonic time it may be asked again
        self._closing: set[asyncio.Task[None]] = set()

    # --- who is where -------------------------------------------------------------------------

    def update(self, placements: Mapping[str, Sequence[str]], addresses: Mapping[str, str]) -> None:
        """The apps' workers (placements) and the live workers' addresses: an app's workers are
        those of its placement with a live lease. Clients of workers gone are closed."""
        self._addresses = dict(addresses)
        self._apps = {
            app: tuple(w for w in workers if w in addresses) for app, workers in placements.items()
        }
        for worker in list(self._clients):
            client = self._clients[worker]
            if addresses.get(worker) != client.address:
                del self._clients[worker]
                self._close_later(client)

    def workers_of(self, app: str) -> tuple[str, ...]:
        return self._apps.get(app, ())

    def owner(self, app: str, key: str) -> str | None:
        """The worker that owns `key` of `app`, or None when it is this one (or the app is on
        this worker alone, or not placed here at all: then the store, as without peers)."""
        workers = self._apps.get(app, ())
        if len(workers) < 2 or self.name not in workers:
            return None
        chosen = owner(f"{app}\0{key}", workers)
        return None if chosen == self.name else chosen

    # --- asking the owner ---------------------------------------------------------------------

    async def fetch(self, owner: str, app: str, key: str, version: int) -> bytes | None:
        """The owner's bytes of `key` at `version` or newer; None when it has none, cannot be
        reached, or does not answer within `timeout` seconds."""
        if time.monotonic() < self._quiet_until.get(owner, 0.0):
            return None
        client = self._client(owner)
        if client is None:
            return None
        args = {"app": app, "key": key, "version": version}
        try:
            async with asyncio.timeout(self.timeout):  # connecting included
                reply = await client.call(OP, args)
        except RemoteError as exc:  # it answered: with an error (its store, say)
            logger.debug("worker %s: cache owner %s: %s", self.name, owner, exc)
            return None
        except (FaasdError, TimeoutError) as exc:  # unreachable, or too slow
            self._quiet_until[owner] = time.monotonic() + self.backoff
            logger.info(
                "worker %s: cache owner %s did not answer (%s); reading the store, and not "
                "asking it for %gs",
                self.name,
                owner,
                exc if str(exc) else type(exc).__name__,
                self.backoff,
            )
            return None
        data = reply.get("data")
        return data if isinstance(data, bytes) else None

    def _client(self, worker: str) -> RpcClient | None:
        client = self._clients.get(worker)
        if client is None:
            address = self._addresses.get(worker)
            if address is None:
                return None
            client = RpcClient(
                worker, address, self._key, max_frame=self._max_frame, connect_timeout=self.timeout
            )
            self._clients[worker] = client
        return client

    def _close_later(self, client: RpcClient) -> None:
        task = asyncio.get_running_loop().create_task(client.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.close() for c in clients), *self._closing, return_exceptions=True)


# --- the owner's side ----------------------------------------------------------------------------


class PeerServing(Protocol):
    """An app's cache as the owner of some of its keys (faasd_py.cache.AppCache)."""

    async def serve_peer(self, key: str, version: int) -> bytes | None: ...


Op = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def cache_get_op(cache_of: Callable[[str], PeerServing | None]) -> Op:
    """The `cache_get` op over `cache_of(app)` (the worker's loaded caches)."""

    async def cache_get(args: dict[str, Any]) -> dict[str, Any]:
        app, key, version = str(args["app"]), str(args["key"]), int(args["version"])
        cache = cache_of(app)
        if cache is None:
            return {"data": None}
        return {"data": await cache.serve_peer(key, version)}

    return cache_get
