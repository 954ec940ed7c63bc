"""The body of a `faasd-py queue-worker` process: a consumer of a shared (Redis) queue that
runs calls through a gateway's /function/ instead of in-process pools, so that async calls can
be consumed away from the gateway, by as many processes as needed (each takes its own calls;
delivery stays at least once and unordered, see _consumer.py).

It consumes the functions the gateway has deployed, with each one's retry and queue policy
from its annotations, learning them again every `refresh` seconds. While the gateway cannot be
reached it goes on with the functions it knew last."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from faasd_py.heap import settle_heap
from faasd_py.queue._base import (
    DEFAULT_LEASE,
    DEFAULT_QUEUE_TIMEOUT,
    BadAnnotation,
    QueuePolicy,
    queue_policy,
)
from faasd_py.queue._callback import CallbackSender
from faasd_py.queue._consumer import Consumer, cancel_and_wait
from faasd_py.queue._invoker import GatewayInvoker
from faasd_py.queue._open import open_queue
from faasd_py.spec import function_ref

logger = logging.getLogger(__name__)

DEFAULT_DRAIN_TIMEOUT = 30.0  # seconds calls in flight may take to end at shutdown


async def serve_queue_worker(
    queue_url: str,
    gateway_url: str,
    headers: Mapping[str, str],
    *,
    name: str | None,
    stop: asyncio.Event,
    default: QueuePolicy,
    refresh: float = 2.0,
    lease: float = DEFAULT_LEASE,
    callback_attempts: int = 5,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
) -> None:
    """Consume `queue_url` through the gateway at `gateway_url` until `stop` is set; then let
    the calls in flight end (up to `drain_timeout`) and close. `headers` (the gateway's Basic
    auth) go with every request to the gateway. ValueError for a queue URL that names no shared
    queue (the embedded queue is `up`'s own)."""
    if not queue_url:
        raise ValueError(
            "a queue-worker needs a shared queue (--queue redis://host:port); the embedded "
            "queue is consumed by `faasd-py up` itself"
        )
    # A URL always names a shared backend: no data dir is used.
    queue = open_queue(queue_url, Path("."), lease=lease, timeout=DEFAULT_QUEUE_TIMEOUT)
    functions = DeployedFunctions(gateway_url, headers, default)
    invoker = GatewayInvoker(gateway_url, headers)
    callbacks = CallbackSender(callback_attempts)
    consumer = Consumer(queue, invoker, functions.policies, callbacks, name=name, lease=lease)
    watcher = asyncio.create_task(functions.watch(refresh), name="queue-worker functions")
    try:
        settle_heap()
        consumer.start()
        logger.info(
            "queue-worker %s consuming %s through the gateway at %s",
            consumer.name,
            queue.name,
            gateway_url,
        )
        await stop.wait()
        await consumer.stop(drain_timeout)
    finally:
        await cancel_and_wait(watcher)
        await functions.close()
        await invoker.close()
        await callbacks.close()
        await queue.close()


class DeployedFunctions:
    """The gateway's functions and their queue policies, as last learned."""

    def __init__(self, gateway_url: str, headers: Mapping[str, str], default: QueuePolicy) -> None:
        self._url = gateway_url.rstrip("/")
        self._headers = dict(headers)
        self._default = default
        self._policies: dict[str, QueuePolicy] = {}
        self._bad: dict[str, str] = {}  # ref -> the error last logged for its annotations
        self._unreachable: str | None = None  # why the gateway could not be asked, while so
        self._session: aiohttp.ClientSession | None = None

    def policies(self) -> Mapping[str, QueuePolicy]:
        return self._policies

    async def watch(self, every: float) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                # A bug: logged, and the functions known last stay.
                logger.exception("unexpected error listing the gateway's functions")
            await asyncio.sleep(every)

    async def refresh(self) -> None:
        """Ask the gateway again; on failure keep what was known (logged once per outage)."""
        try:
            annotations = await self._fetch()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            why = str(exc) or type(exc).__name__
            if self._unreachable is None:
                logger.warning(
                    "the gateway at %s cannot list its functions (%s); consuming the %d known "
                    "until it can",
                    self._url,
                    why,
                    len(self._policies),
                )
            self._unreachable = why
            return
        if self._unreachable is not None:
            logger.info("the gateway at %s lists its functions again", self._url)
            self._unreachable = None
        self._policies = {ref: self._policy(ref, a) for ref, a in annotations.items()}
        self._bad = {ref: why for ref, why in self._bad.items() if ref in annotations}

    def _policy(self, ref: str, annotations: Mapping[str, str]) -> QueuePolicy:
        try:
            policy = queue_policy(annotations, self._default)
        except BadAnnotation as exc:
            if self._bad.get(ref) != exc.message:
                logger.warning("function %s: %s; its async calls use the defaults", ref, exc)
            self._bad[ref] = exc.message
            return self._default
        self._bad.pop(ref, None)
        return policy

    async def _fetch(self) -> dict[str, dict[str, str]]:
        """ref -> annotations of every function of every namespace. ValueError for answers
        that are not what a gateway sends."""
        namespaces = await self._get("/system/namespaces", {})
        if not isinstance(namespaces, list):
            raise ValueError("/system/namespaces did not answer a JSON list")
        found: dict[str, dict[str, str]] = {}
        for namespace in namespaces:
            listed = await self._get("/system/functions", {"namespace": str(namespace)})
            if not isinstance(listed, list):
                raise ValueError("/system/functions did not answer a JSON list")
            for function in listed:
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise ValueError("/system/functions listed something that is not a function")
                annotations = function.get("annotations") or {}
                if not isinstance(annotations, dict):
                    raise ValueError(f"function {function['name']}: annotations not an object")
                found[function_ref(function["name"], str(namespace))] = {
                    str(k): str(v) for k, v in annotations.items()
                }
        return found

    async def _get(self, path: str, query: Mapping[str, str]) -> object:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=10.0)
            )
        async with self._session.get(self._url + path, params=query) as response:
            if response.status != 200:
                text = (await response.text(errors="replace"))[:200]
                raise ValueError(f"GET {path} answered HTTP {response.status}: {text}")
            return await response.json(content_type=None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
