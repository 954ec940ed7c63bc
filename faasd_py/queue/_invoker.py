"""How a consumer runs a queued call: an `Invoker` turns a `QueuedCall` into the function's
answer (`CallResult`), the one seam between the queue and the functions.

An invoker never raises for what went wrong with the invocation: an unknown function, an
overloaded or crashed instance, a timeout, a gateway that cannot be reached all come back as a
`CallResult` with the status and the JSON error body (`{"error": ..., "status": N}`) a
synchronous caller of /function/ would have had, so that the retry policy judges async calls
by the same statuses. Only cancellation (shutdown) escapes.

`WorkerInvoker` runs calls in the process's own worker pools (`faasd-py up`), `GatewayInvoker`
sends them to a gateway over HTTP (a `faasd-py queue-worker` process of its own)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import aiohttp
from multidict import CIMultiDict

from faasd_py.errors import FaasdError
from faasd_py.protocol import Request
from faasd_py.queue._base import QueuedCall

if TYPE_CHECKING:
    from faasd_py.worker import Outcome

logger = logging.getLogger(__name__)

# Headers that describe one connection, not the message: never copied from one hop to the next.
HOP_BY_HOP = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "host"}
)


@dataclass(frozen=True, slots=True)
class CallResult:
    """The function's answer to one attempt of a call."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    duration: float  # seconds the attempt took
    started_at: float  # wall-clock seconds when it started


def error_result(status: int, message: str, started_at: float, duration: float) -> CallResult:
    """An attempt that failed before or around the function, answered as the gateway answers
    such a failure: JSON `{"error": message, "status": status}`."""
    body = json.dumps({"error": message, "status": status}).encode()
    headers = [("Content-Type", "application/json; charset=utf-8")]
    return CallResult(status, headers, body, duration, started_at)


class Invoker(Protocol):
    async def invoke(self, call: QueuedCall) -> CallResult:
        """One attempt of `call`; raises nothing but CancelledError (see the module)."""
        ...


class FunctionRunner(Protocol):
    """What `WorkerInvoker` needs of a worker (faasd_py.gateway.FunctionWorker has it)."""

    async def invoke(self, name: str, request: Request) -> Outcome: ...


# observe(function ref, status, seconds, cold-start seconds): the gateway's Prometheus recorder.
Observer = Callable[[str, int, float, float], None]


class WorkerInvoker:
    """Runs calls through the worker's pools, as /function/ does: async calls queue for the
    same instances and count in the same metrics (through `observe`)."""

    def __init__(self, worker: FunctionRunner, observe: Observer | None = None) -> None:
        self._worker = worker
        self._observe = observe

    async def invoke(self, call: QueuedCall) -> CallResult:
        ref = call.function
        started_at, started = time.time(), time.perf_counter()
        cold_start = 0.0
        failure: str | None
        try:
            outcome = await self._worker.invoke(ref, call.request)
        except FaasdError as exc:
            status, failure = exc.status, exc.message
        except Exception:
            # A bug in the worker: the sync path answers 500 too; the traceback goes to the log.
            logger.exception("unexpected error running queued call %s of %s", call.call_id, ref)
            status = 500
            failure = (
                f"internal error in the worker while running call {call.call_id} of {ref}: "
                "a bug in faasd-py; its log has the traceback"
            )
        else:
            result, cold_start = outcome.result, outcome.cold_start_seconds
            status = result.status
            failure = None if result.error is None else f"function {ref} failed: {result.error}"
        duration = time.perf_counter() - started
        if self._observe is not None:
            self._observe(ref, status, duration, cold_start)
        if failure is not None:
            return error_result(status, failure, started_at, duration)
        # The stages as /function/ reports them: the callback carries them to the caller.
        headers = [*result.headers, ("Server-Timing", outcome.server_timing(duration))]
        return CallResult(status, headers, result.body, duration, started_at)


class GatewayInvoker:
    """Sends calls to a gateway's /function/{ref}{path}?{query}, with the call's method,
    headers and body. `headers` (such as the gateway's credentials) go with every request; a
    call's own header of the same name wins, so that a function that reads its caller's
    Authorization still gets it. The gateway enforces the function's exec_timeout; `timeout`
    only bounds a gateway that stops answering (504 after it). Close it when done."""

    def __init__(
        self, gateway_url: str, headers: Mapping[str, str], *, timeout: float = 900.0
    ) -> None:
        self._url = gateway_url.rstrip("/")
        self._headers = dict(headers)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def invoke(self, call: QueuedCall) -> CallResult:
        request = call.request
        url = f"{self._url}/function/{call.function}{request.path}"
        if request.query:
            url += "?" + request.query
        headers: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in request.headers if k.lower() not in HOP_BY_HOP
        )
        for name, value in self._headers.items():
            headers.setdefault(name, value)
        started_at, started = time.time(), time.perf_counter()
        try:
            async with self._client().request(
                request.method, url, headers=headers, data=request.body
            ) as response:
                body = await response.read()
                pairs = [(k, v) for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP]
                status = response.status
        except TimeoutError:
            failure = (
                f"the gateway at {self._url} did not answer call {call.call_id} of "
                f"{call.function} within {self._timeout.total:g}s"
            )
            return error_result(504, failure, started_at, time.perf_counter() - started)
        except (aiohttp.ClientError, OSError) as exc:
            failure = f"the gateway at {self._url} cannot be reached: {exc or type(exc).__name__}"
            return error_result(502, failure, started_at, time.perf_counter() - started)
        return CallResult(status, pairs, body, time.perf_counter() - started, started_at)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # The body goes on as the function sent it, Content-Encoding and all.
            self._session = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
