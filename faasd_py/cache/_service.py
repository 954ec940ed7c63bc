"""The worker's side of `context.storage`: an instance's storage calls, answered from its app's
storage (the app's cache, or the store itself when the cache is off for the function).

The instance reading its channel hands each `storage` message to `StorageService.handle`, run as
a task of its own so that a slow store does not hold up the results of other invocations. A read
holds a lease on the cached object (a pin: it cannot be evicted) until its reply is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faasd_py.cache._manager import AppStorage, CacheManager, DirectStorage
from faasd_py.errors import StorageUnavailable
from faasd_py.protocol import ChannelClosed, ProtocolError, StorageCall, StorageReply

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


class StorageService:
    def __init__(self, storage: AppStorage, max_value: int) -> None:
        self.storage = storage
        # The largest object a reply (or a put) may carry: the channel's frames are bounded.
        self.max_value = max_value

    @property
    def app(self) -> str:
        return self.storage.app

    async def handle(self, message: dict[str, Any], send: Send) -> None:
        """Answer one storage message; every failure becomes an error reply, not an exception
        (the instance's reading loop must go on)."""
        try:
            call = StorageCall.from_wire(message)
        except (ProtocolError, KeyError) as exc:
            await send(StorageReply(int(message.get("id", -1)), None, _invalid(str(exc))).to_wire())
            return
        try:
            if call.call == "get":
                async with self.storage.lease(call.key) as data:
                    if data is not None and len(data) > self.max_value:
                        reply = StorageReply(call.id, None, _too_large(call.key, len(data), self))
                    else:
                        reply = StorageReply(call.id, data)
                    await send(reply.to_wire())
                return
            value = await self._call(call)
            reply = StorageReply(call.id, value)
        except StorageUnavailable as exc:
            reply = StorageReply(call.id, None, _unavailable(exc))
        except ValueError as exc:
            reply = StorageReply(call.id, None, _invalid(str(exc)))
        except Exception as exc:
            logger.exception("storage call %s of app %s failed", call.call, self.app)
            reply = StorageReply(
                call.id, None, {"kind": "failed", "message": f"{type(exc).__name__}: {exc}"}
            )
        await send(reply.to_wire())

    async def _call(self, call: StorageCall) -> bytes | int | bool | list[str] | None:
        if call.call == "put":
            if not isinstance(call.data, bytes):
                raise ValueError("put needs bytes")
            if len(call.data) > self.max_value:
                raise ValueError(_too_large(call.key, len(call.data), self)["message"])
            return await self.storage.put(call.key, call.data)
        if call.call == "delete":
            return await self.storage.delete(call.key)
        if call.call == "exists":
            return await self.storage.exists(call.key)
        return await self.storage.list(call.key)


def _unavailable(exc: StorageUnavailable) -> dict[str, str]:
    return {"kind": "unavailable", "message": exc.message, "store": exc.store, "cause": exc.cause}


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


class WorkerStorage:
    """What the worker hands its instances: `attach` when an instance of an app has loaded,
    `detach` when it exits. The app's cache lives from its first attach to its last detach."""

    def __init__(self, manager: CacheManager, max_value: int) -> None:
        self.manager = manager
        self.max_value = max_value

    async def attach(self, app: str, annotations: dict[str, str]) -> StorageService:
        try:
            cached = cache_wanted(annotations, self.manager.settings.enabled)
        except ValueError as exc:
            logger.warning("%s; using the worker's setting", exc)
            cached = self.manager.settings.enabled
        storage = await self.manager.open(app, cached=cached)
        return StorageService(storage, self.max_value)

    async def detach(self, service: StorageService) -> None:
        if not isinstance(service.storage, DirectStorage):
            await self.manager.release(service.app)

    async def close(self) -> None:
        await self.manager.close()


async def answer_storage(
    service: StorageService | None, message: dict[str, Any], send: Send
) -> None:
    """Answer an instance's storage message; a reply that can no longer be sent (the instance
    is gone) is dropped."""
    try:
        if service is None:
            error = {"kind": "failed", "message": "this worker has no storage configured"}
            await send(StorageReply(int(message.get("id", -1)), None, error).to_wire())
        else:
            await service.handle(message, send)
    except ChannelClosed:
        pass
