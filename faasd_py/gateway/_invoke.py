"""/function/{name}[.{namespace}][/path]: the invocation path, the product's hot path.

Two fronts serve it and share everything here: the aiohttp route below, and the lean
Protocol of gateway/_front.py that answers plain HTTP/1.1 requests to /function/ without
aiohttp's request machinery. What does not depend on the front is in `Invocations.answer` and
the helpers it uses (the call's trace, the headers forwarded to the function and those taken
from its answer); each front only reads the request and writes the `Reply`.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from faasd_py.errors import FaasdError, NotFound, PayloadTooLarge
from faasd_py.gateway._errors import (
    error_response,
    faasd_error_response,
    internal_error_response,
)
from faasd_py.gateway._keys import CONFIG, METRICS, REGISTRY, WORKER
from faasd_py.gateway._namespaces import require_namespace
from faasd_py.protocol import Headers, Request
from faasd_py.spec import function_ref, split_ref

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

# Request headers the gateway sets itself on the way to the function.
_REPLACED = frozenset({"x-call-id", "x-start-time", "x-forwarded-for"})

# Headers a handler may not set: the gateway frames the response itself.
_HOP_BY_HOP = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}
)
# Headers of the function's that the gateway's own replace.
_OURS = frozenset({"x-call-id", "x-start-time", "x-duration-seconds", "server-timing"})
_DROPPED = _HOP_BY_HOP | _OURS


# What a response header may hold (RFC 9110 5.1, 5.5): a name is a token; a value is any text
# but control characters (HTAB is allowed) and lone surrogates (not UTF-8 encodable).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NOT_IN_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Reply:
    """A function's answer as the gateway sends it (errors are aiohttp Responses, built by
    gateway/_errors, which both fronts send as they are)."""

    status: int
    headers: Headers
    body: bytes


class Invocations:
    """What both fronts need to run a call: the app's worker, metrics and registry."""

    __slots__ = ("_app", "max_body")

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self.max_body = app[CONFIG].max_body

    async def answer(
        self,
        name: str,
        namespace: str,
        started: float,
        trace: dict[str, str],
        call: Callable[[], Awaitable[Request]],
    ) -> Reply | web.Response:
        """Run the call that `call` reads (it may raise PayloadTooLarge) on NAME.NAMESPACE,
        record it in the metrics and say what to answer. `started`: perf_counter() when the
        request's head was read. Exceptions other than FaasdError are the caller's to answer
        (it has the request to name), after `observe_bug`."""
        ref = function_ref(name, namespace)
        app = self._app
        metrics = app[METRICS]
        try:
            outcome = await app[WORKER].invoke(ref, await call())
            result = outcome.result
            elapsed = time.perf_counter() - started
            headers = _response_headers(ref, result.headers)
            metrics.observe(ref, result.status, elapsed, outcome.cold_start_seconds)
            headers.extend(trace.items())
            headers.append(("X-Duration-Seconds", f"{elapsed:.6f}"))
            headers.append(("Server-Timing", outcome.server_timing(elapsed)))
            if result.error is not None:
                return error_response(
                    result.status, f"function {ref} failed: {result.error}", CIMultiDict(headers)
                )
            return Reply(result.status, headers, result.body)
        except FaasdError as exc:
            error = exc
        elapsed = time.perf_counter() - started
        metrics.observe(ref, error.status, elapsed)
        trace["X-Duration-Seconds"] = f"{elapsed:.6f}"
        if isinstance(error, NotFound):
            error = await function_not_found(app, name, namespace)
        return faasd_error_response(error, trace)

    def observe_bug(self, name: str, namespace: str, status: int, started: float) -> None:
        """Count a call that ended in a gateway bug (or the client leaving) as today."""
        self._app[METRICS].observe(
            function_ref(name, namespace), status, time.perf_counter() - started
        )

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body exceeds the gateway's limit of {self.max_body} bytes (--max-body)"
        )


@routes.route("*", "/function/{name}")
@routes.route("*", "/function/{name}/{path:.*}")
async def invoke(request: web.Request) -> web.StreamResponse:
    started_wall, started = time.time(), time.perf_counter()
    # NAME or NAME.NAMESPACE (what OpenFaaS's clients send).
    name, namespace = split_ref(request.match_info["name"])
    trace = call_trace(request, started_wall)
    invocations = Invocations(request.app)
    try:
        reply = await invocations.answer(
            name, namespace, started, trace, lambda: function_request(request, trace)
        )
    except Exception:
        response = internal_error_response(request, trace)
        invocations.observe_bug(name, namespace, response.status, started)
        return response
    if isinstance(reply, web.Response):
        return reply
    return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


class _BadHeader(FaasdError):
    """A function's response that cannot be sent: the function's fault, as a proxy says it."""

    status = 502


def _response_headers(ref: str, pairs: Headers) -> Headers:
    """The function's headers for the response, without those the gateway frames itself.

    _BadHeader names the first that cannot be sent: aiohttp would refuse a line break (and
    drop the connection), and a name that is not a token or a value with another control
    character would reach the client as a broken response. (The runtime checks too, but a
    function's code shares its process and can send anything.)"""
    headers: Headers = []
    for name, value in pairs:
        if _TOKEN.fullmatch(name) is None or _NOT_IN_VALUE.search(value) is not None:
            raise _BadHeader(
                f"function {ref} returned a header that cannot be sent: {name[:100]!r}: "
                f"{value[:100]!r}; a header name is letters, digits and !#$%&'*+-.^_`|~ only, "
                "and a value may not hold control characters such as CR, LF or NUL"
            )
        if name.lower() not in _DROPPED:
            headers.append((name, value))
    return headers


def call_trace(request: web.Request, started_wall: float) -> dict[str, str]:
    """The call's X-Call-Id (the caller's, or a new UUID) and X-Start-Time (Unix nanoseconds)."""
    return new_trace(request.headers.get("X-Call-Id"), started_wall)


# Call ids are random version-4 UUIDs, drawn from a generator seeded once from the OS rather than
# by uuid.uuid4(), which asks the kernel for 16 bytes (a getrandom system call) on every call and
# costs three times as much in all. An id only has to be unique, not unguessable: it names a call
# in logs and lets a handler deduplicate deliveries; nothing is authorised by it.
_ids = random.Random(os.urandom(32))
_UUID4_BITS = (0x4 << 76) | (0x2 << 62)  # the version nibble, and the variant bits 10
_UUID4_MASK = ~((0xF << 76) | (0x3 << 62))


def new_call_id() -> str:
    """A new random X-Call-Id in the UUID text form OpenFaaS's gateway uses."""
    digits = f"{_ids.getrandbits(128) & _UUID4_MASK | _UUID4_BITS:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def new_trace(call_id: str | None, started_wall: float) -> dict[str, str]:
    """`call_trace` from the caller's X-Call-Id header (None: absent)."""
    call_id = call_id or new_call_id()
    if not call_id.isascii():
        call_id = _as_sent(call_id)
    return {"X-Call-Id": call_id, "X-Start-Time": str(int(started_wall * 1e9))}


async def function_request(request: web.Request, trace: dict[str, str]) -> Request:
    """What the function is sent for this call (/function/ now, /async-function/ later): the
    method, the path after the function's name, the query, the headers the OpenFaaS gateway
    forwards (with `trace`), and the body (PayloadTooLarge over --max-body)."""
    body = await read_body(request)
    return Request(
        trace["X-Call-Id"],
        request.method,
        "/" + request.match_info.get("path", ""),
        request.query_string,
        forwarded_headers(request, trace),
        body,
    )


def forwarded_headers(request: web.Request, trace: dict[str, str]) -> list[tuple[str, str]]:
    """`forward` for an aiohttp request."""
    incoming = request.headers
    return forward(incoming.items(), request.host, request.remote, trace)


def forward(
    incoming: Iterable[tuple[str, str]], host: str | None, remote: str | None, trace: dict[str, str]
) -> list[tuple[str, str]]:
    """The caller's headers plus what the OpenFaaS gateway adds for the function: the call's id
    and start time, the host the caller asked for and the address it came from (appended to a
    proxy's X-Forwarded-For, as proxies do)."""
    headers = []
    chain = []
    has_forwarded_host = False
    for k, v in incoming:
        lower = k.lower()
        if lower == "x-forwarded-for":
            chain.append(v)
        elif lower == "x-forwarded-host":
            has_forwarded_host = True
        if lower not in _REPLACED:
            headers.append((k, v))
    headers.extend(trace.items())
    if not has_forwarded_host and host:
        headers.append(("X-Forwarded-Host", host))
    chain.append(remote or "")
    if any(chain):
        headers.append(("X-Forwarded-For", ", ".join(hop for hop in chain if hop)))
    return [(k, v if v.isascii() else _as_sent(v)) for k, v in headers]


def _as_sent(value: str) -> str:
    """A header value that the function can turn back into the bytes sent.

    aiohttp decodes header values as UTF-8 and keeps bytes that are not UTF-8 as lone
    surrogates, which cannot cross the channel to the instance. Such a value is passed on as
    Latin-1 instead, one character per byte (WSGI's rule for every header, so a template's
    handler expects it): `value.encode("latin-1")` gives back exactly what the client sent.
    Values that are UTF-8 stay as they are."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("latin-1")
    return value


async def function_not_found(
    app_or_request: web.Application | web.Request, name: str, namespace: str
) -> FaasdError:
    """A 404 that says whether the namespace or the function is missing (off the hot path)."""
    app = app_or_request.app if isinstance(app_or_request, web.Request) else app_or_request
    try:
        await require_namespace(app[REGISTRY], namespace)
    except NotFound as exc:
        return exc
    return NotFound(
        f"function {name!r} not found in namespace {namespace!r}; deploy it with "
        "`faasd-py deploy` (or faas-cli deploy)"
    )


async def read_body(request: web.Request) -> bytes:
    too_large = Invocations(request.app).too_large()
    if request.content_length is not None and request.content_length > request.app[CONFIG].max_body:
        raise too_large
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
