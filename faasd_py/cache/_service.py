"""The worker's side of `context.storage`: an instance's storage calls, answered from its app's
storage (the app's cache, or the store itself when the cache is off for the function).

The instance reading its channel hands each `storage` message to `StorageService.submit`, which
answers it in a task of its own, so that a slow store does not hold up the results of other
invocations, and returns once the instance may send another: its calls in flight are bounded in
number and bytes (`InflightBound`, _bound.py), and past the bound the reader stops reading that
instance's channel. A read holds a lease on the cached object (a pin: it cannot be evicted) until
its reply is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from faasd_py.cache._bound import InflightBound, InflightStatistics, payload_size
from faasd_py.cache._manager import AppStorage, CacheManager, DirectStorage
from faasd_py.errors import FaasdError, StorageQuotaExceeded, StorageUnavailable
from faasd_py.protocol import ChannelClosed, ProtocolError, StorageCall, StorageReply
from faasd_py.storage import DEFAULT_STORE_TIMEOUT, BadQuotaAnnotation, Quota, Usage, quota_of

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class StorageLimits:
    """What one instance's storage calls may hold in the worker (see _bound.py), and its app's
    quota in the store unless the function's annotations set their own."""

    calls_in_flight: int = 16
    bytes_in_flight: int = 64 * 1024 * 1024
    quota: Quota = field(default_factory=Quota)
    # The store's own timeout on a call (--storage-timeout); a function's may be tighter.
    store_timeout: float = DEFAULT_STORE_TIMEOUT

    def bound(self, memory_limit: int | None = None) -> InflightBound:
        """The bound of one instance. What the worker holds for it counts against the
        function's own memory: never more bytes in flight than its `limits.memory` (so a
        128Mi function cannot make the worker hold 64Mi per instance times its instances
        beyond what it could hold itself)."""
        held = self.bytes_in_flight
        if memory_limit is not None:
            held = min(held, memory_limit)
        return InflightBound(self.calls_in_flight, held)


@dataclass(frozen=True)
class StoreDeadline:
    """How long one storage call of a function may take when that is less than the store's own
    timeout (--storage-timeout): half the function's exec_timeout, so that a handler whose store
    hangs still has time to catch StorageUnavailable and answer, instead of its caller getting
    a 504 and the instance being replaced."""

    seconds: float
    store: str
    exec_timeout: float

    @classmethod
    def of(cls, exec_timeout: float, store: str, store_timeout: float) -> StoreDeadline | None:
        seconds = exec_timeout / 2
        return cls(seconds, store, exec_timeout) if seconds < store_timeout else None

    def missed(self) -> StorageUnavailable:
        return StorageUnavailable(
            self.store,
            f"no answer within {self.seconds:g}s (half the function's exec_timeout of "
            f"{self.exec_timeout:g}s)",
        )


class StorageService:
    """One instance's storage: its app's storage, and the bound on its calls in flight."""

    def __init__(
        self,
        storage: AppStorage,
        max_value: int,
        limits: StorageLimits | None = None,
        quota: Quota | None = None,
        memory_limit: int | None = None,
        deadline: StoreDeadline | None = None,
    ) -> None:
        self.storage = storage
        self.deadline = deadline
        # The largest object a reply (or a put) may carry: the channel's frames are bounded.
        self.max_value = max_value
        limits = limits or StorageLimits()
        # The function's own quota (its annotations), else the worker's.
        self.quota = quota or limits.quota
        self.quota_refusals = 0
        self._bound = limits.bound(memory_limit)
        self._room = asyncio.Event()
        self._calls: set[asyncio.Task[None]] = set()

    @property
    def app(self) -> str:
        return self.storage.app

    async def submit(self, message: StorageCall | dict[str, Any], send: Send) -> None:
        """Answer `message` in a task of its own; return when the instance may send another
        call (at once, unless its calls in flight have reached their bound)."""
        size = payload_size(message)
        self._bound.take(size)
        task = asyncio.create_task(self._answer(message, send, size))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        if not self._bound.open:
            self._bound.paused()
            while not self._bound.open:
                self._room.clear()
                await self._room.wait()

    async def _answer(self, message: StorageCall | dict[str, Any], send: Send, size: int) -> None:
        async def counted(reply: dict[str, Any]) -> None:
            # A reply's bytes are held until sent: a get's are the worker's to bound too.
            held = payload_size(reply)
            self._bound.hold(held)
            try:
                await send(reply)
            finally:
                self._bound.release(held)

        try:
            with contextlib.suppress(ChannelClosed):  # the instance is gone: drop the reply
                await self.handle(message, counted)
        finally:
            self._bound.finish(size)
            self._room.set()

    def statistics(self) -> InflightStatistics:
        return self._bound.statistics()

    async def close(self) -> None:
        """Give up the calls in flight (the instance is gone)."""
        calls = list(self._calls)
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)

    async def handle(self, message: StorageCall | dict[str, Any], send: Send) -> None:
        """Answer one storage message; every failure becomes an error reply, not an exception
        (the instance's reading loop must go on)."""
        if isinstance(message, StorageCall):
            call = message
        else:
            try:
                call = StorageCall.from_wire(message)
            except (ProtocolError, KeyError) as exc:
                await send(StorageReply(_id_of(message), None, _invalid(str(exc))).to_wire())
                return
        try:
            if call.call == "get":
                async with self._in_time() as timer, self.storage.lease(call.key) as data:
                    timer.reschedule(None)  # the store has answered; sending is not its time
                    if data is not None and len(data) > self.max_value:
                        reply = StorageReply(call.id, None, _too_large(call.key, len(data), self))
                    else:
                        reply = StorageReply(call.id, data)
                    await send(reply.to_wire())
                return
            async with self._in_time():
                value = await self._call(call)
            reply = StorageReply(call.id, value)
        except StorageUnavailable as exc:
            reply = StorageReply(call.id, None, _unavailable(exc))
        except StorageQuotaExceeded as exc:
            self.quota_refusals += 1
            reply = StorageReply(call.id, None, _over_quota(exc))
        except ValueError as exc:
            reply = StorageReply(call.id, None, _invalid(str(exc)))
        except Exception as exc:
            logger.exception("storage call %s of app %s failed", call.call, self.app)
            reply = StorageReply(
                call.id, None, {"kind": "failed", "message": f"{type(exc).__name__}: {exc}"}
            )
        await send(reply.to_wire())

    @contextlib.asynccontextmanager
    async def _in_time(self) -> AsyncIterator[asyncio.Timeout]:
        """The function's own deadline on a storage call, where it is tighter than the store's
        (see StoreDeadline): StorageUnavailable after it."""
        seconds = None if self.deadline is None else self.deadline.seconds
        try:
            async with asyncio.timeout(seconds) as timer:
                yield timer
        except TimeoutError:
            assert self.deadline is not None
            raise self.deadline.missed() from None

    async def _call(self, call: StorageCall) -> bytes | int | bool | list[str] | None:
        if call.call == "put":
            if not isinstance(call.data, bytes):
                raise ValueError("put needs bytes")
            if len(call.data) > self.max_value:
                raise ValueError(_too_large(call.key, len(call.data), self)["message"])
            return await self.storage.put(call.key, call.data, self.quota)
        if call.call == "delete":
            return await self.storage.delete(call.key)
        if call.call == "exists":
            return await self.storage.exists(call.key)
        return await self.storage.list(call.key)


def _id_of(message: dict[str, Any]) -> int:
    """The id to answer a malformed call with: its own if it is a number, else -1."""
    value = message.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _unavailable(exc: StorageUnavailable) -> dict[str, str]:
    return {"kind": "unavailable", "message": exc.message, "store": exc.store, "cause": exc.cause}


def _over_quota(exc: StorageQuotaExceeded) -> dict[str, str]:
    return {"kind": "quota", "message": exc.message, "quota": exc.quota, "limit": str(exc.limit)}


def _invalid(message: str) -> dict[str, str]:
    return {"kind": "invalid", "message": message}


def _too_large(key: str, size: int, service: StorageService) -> dict[str, str]:
    return _invalid(
        f"object {key!r} of {size} bytes is larger than an instance's channel carries "
        f"({service.max_value} bytes; raise --max-body)"
    )


# A function's annotation that turns the cache off (or on) for it, whatever --cache says.
ANNOTATION_CACHE = "com.faasd-py.cache"


def cache_wanted(annotations: dict[str, str], default: bool) -> bool:
    """What the function's com.faasd-py.cache annotation asks for ("on"/"off"), else `default`;
    ValueError naming the annotation for anything else."""
    value = annotations.get(ANNOTATION_CACHE)
    if value is None:
        return default
    if value.lower() in ("on", "true", "1"):
        return True
    if value.lower() in ("off", "false", "0"):
        return False
    raise ValueError(f"annotation {ANNOTATION_CACHE} must be on or off, got {value!r}")


@dataclass(frozen=True)
class StorageStatistics:
    """One app's storage calls in this worker."""

    app: str
    calls_in_flight: int
    bytes_in_flight: int
    # The most payload bytes any one instance of the app made the worker hold at once.
    peak_instance_bytes: int
    # Times a reader stopped reading an instance's channel at the bound.
    pauses: int
    # The app's use of the store, as this worker last saw it (after its writes), and the puts
    # its quota refused.
    stored_bytes: int = 0
    stored_keys: int = 0
    quota_refusals: int = 0


class WorkerStorage:
    """What the worker hands its instances: `attach` when an instance of an app has loaded,
    `detach` when it exits. The app's cache lives from its first attach to its last detach."""

    def __init__(
        self, manager: CacheManager, max_value: int, limits: StorageLimits | None = None
    ) -> None:
        self.manager = manager
        self.max_value = max_value
        self.limits = limits or StorageLimits()
        self._services: set[StorageService] = set()
        # Of instances gone (live ones are read from their service): the largest bytes in flight
        # any one instance of the app held, the times the bound paused a reader, quota refusals.
        self._past: dict[str, tuple[int, int, int]] = {}
        self._counting: set[asyncio.Task[None]] = set()

    async def attach(
        self,
        app: str,
        annotations: dict[str, str],
        memory_limit: int | None = None,
        exec_timeout: float | None = None,
    ) -> StorageService:
        try:
            cached = cache_wanted(annotations, self.manager.settings.enabled)
        except ValueError as exc:
            logger.warning("%s; using the worker's setting", exc)
            cached = self.manager.settings.enabled
        try:
            quota = quota_of(annotations, self.limits.quota)
        except BadQuotaAnnotation as exc:  # refused at deploy; a spec from before is let through
            logger.warning("%s; using the worker's quota", exc)
            quota = self.limits.quota
        storage = await self.manager.open(app, cached=cached)
        deadline = None
        if exec_timeout is not None:
            store = self.manager.store
            deadline = StoreDeadline.of(exec_timeout, store.name, self.limits.store_timeout)
        service = StorageService(
            storage, self.max_value, self.limits, quota, memory_limit, deadline
        )
        self._services.add(service)
        if app not in self.manager.store.known_usage():
            self._count_usage(app)
        return service

    def _count_usage(self, app: str) -> None:
        """Learn the app's use from the store in the background, for its metrics (a store that
        cannot answer must not hold up the instance's start)."""

        async def count() -> None:
            try:
                await self.manager.store.usage(app)
            except FaasdError as exc:
                logger.debug("use of app %s not known yet: %s", app, exc)

        task = asyncio.create_task(count())
        self._counting.add(task)
        task.add_done_callback(self._counting.discard)

    async def detach(self, service: StorageService) -> None:
        self._services.discard(service)
        await service.close()
        peak, pauses, refusals = self._past.get(service.app, (0, 0, 0))
        mine = service.statistics()
        self._past[service.app] = (
            max(peak, mine.peak_bytes),
            pauses + mine.pauses,
            refusals + service.quota_refusals,
        )
        if not isinstance(service.storage, DirectStorage):
            await self.manager.release(service.app)

    def statistics(self) -> dict[str, StorageStatistics]:
        """Per app: its use of the store, its instances' storage calls in flight, the most any
        one held, and the puts its quota refused."""
        used = self.manager.store.known_usage()
        apps: dict[str, StorageStatistics] = {}

        def add(app: str, calls: int, held: int, peak: int, pauses: int, refusals: int) -> None:
            before = apps.get(app) or StorageStatistics(app, 0, 0, 0, 0)
            usage = used.get(app, Usage(0, 0))
            apps[app] = StorageStatistics(
                app=app,
                calls_in_flight=before.calls_in_flight + calls,
                bytes_in_flight=before.bytes_in_flight + held,
                peak_instance_bytes=max(before.peak_instance_bytes, peak),
                pauses=before.pauses + pauses,
                stored_bytes=usage.bytes,
                stored_keys=usage.keys,
                quota_refusals=before.quota_refusals + refusals,
            )

        for app in used:
            add(app, 0, 0, 0, 0, 0)
        for app, (peak, pauses, refusals) in self._past.items():
            add(app, 0, 0, peak, pauses, refusals)
        for service in self._services:
            now = service.statistics()
            add(
                service.app,
                now.calls,
                now.bytes,
                now.peak_bytes,
                now.pauses,
                service.quota_refusals,
            )
        return apps

    async def close(self) -> None:
        for task in list(self._counting):
            task.cancel()
        await asyncio.gather(*self._counting, return_exceptions=True)
        await self.manager.close()


async def answer_storage(
    service: StorageService | None, message: StorageCall | dict[str, Any], send: Send
) -> None:
    """Answer an instance's storage message (`StorageService.submit`: returns when the instance
    may send another); a reply that can no longer be sent (the instance is gone) is dropped."""
    if service is not None:
        await service.submit(message, send)
        return
    error = {"kind": "failed", "message": "this worker has no storage configured"}
    call_id = message.id if isinstance(message, StorageCall) else _id_of(message)
    with contextlib.suppress(ChannelClosed):
        await send(StorageReply(call_id, None, error).to_wire())
