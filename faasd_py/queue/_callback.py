"""The result of an async call, POSTed to the call's X-Callback-Url as OpenFaaS's queue-worker
does: the function's body, the function's response headers (less those of one connection), and
X-Call-Id, X-Function-Name (NAME.NAMESPACE), X-Function-Status, X-Duration-Seconds and
X-Start-Time (when the gateway accepted the call, ns since the epoch).

Delivery is best effort, at most `attempts` POSTs: connection errors, time-outs, 429 and 5xx
answers are tried again after an exponential backoff; any other 4xx is final; 2xx and 3xx are
delivered (a redirect is not followed). A callback that is never delivered is logged once and
counted; it does not make the call run again. (A call that runs again, because its consumer
died, may POST its callback again: a receiver sees each call at least once when it is
reachable, and should key on X-Call-Id.)

The POSTs go out over faasd_py.http1, not aiohttp's client: they run on the event loop that
also serves the gateway and runs the consumer, where aiohttp's client cost 80-200 us of CPU a
callback and this one 35-100 us (a process's CPU, kernel included, POSTing one callback at a
time or 16 at once to a receiver in another process). Each receiver (scheme, host and port)
has a Pool of keep-alive connections, at most MAX_ORIGINS of them kept; a Pool opens a
connection per callback in flight, without a limit of its own: the consumer's bound on the calls
it holds (queue._consumer.MAX_HELD) bounds them."""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import random
import ssl
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from multidict import CIMultiDict
from yarl import URL

from faasd_py.http1 import ConnectFailed, Disconnected, Pool, ProtocolError, build_request
from faasd_py.queue._base import QueuedCall, RetryPolicy
from faasd_py.queue._invoker import HOP_BY_HOP, CallResult
from faasd_py.spec import qualified_name

logger = logging.getLogger(__name__)

USER_AGENT = "faasd-py-queue-worker"
# Receivers whose pools (and idle connections) are kept; a callback to one more closes the
# least recently used. Most deployments call back to a handful.
MAX_ORIGINS = 64
# What a body without the function's Content-Type is said to be: what aiohttp's client, which
# sent the callbacks before, said of bytes.
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Characters that would end a header line early and forge the next one. The runtime keeps a
# handler from sending them, but a function's code shares its process.
_UNSENDABLE = ("\r", "\n", "\0")
# What a request target carries as it is: printable ASCII but the space. Anything else (a
# space, a control character, non-ASCII) is percent-encoded as UTF-8, as aiohttp did.
_TARGET_SAFE = "".join(map(chr, range(0x21, 0x7F)))

Origin = tuple[str, str, int]  # scheme, host, port


@dataclass(frozen=True, slots=True)
class CallbackStatistics:
    delivered: int  # callbacks answered 2xx or 3xx
    failed: int  # callbacks given up
    retried: int  # POSTs tried again after a failed one


def callback_headers(call: QueuedCall, result: CallResult) -> CIMultiDict[str]:
    """What the callback's POST carries as headers."""
    headers: CIMultiDict[str] = CIMultiDict(
        (k, v)
        for k, v in result.headers
        if k.lower() not in HOP_BY_HOP and not any(c in k + v for c in _UNSENDABLE)
    )
    # The start as the gateway stamped it on the call (OpenFaaS passes it on as it came).
    start = next(
        (v for k, v in call.request.headers if k.lower() == "x-start-time"),
        str(int(call.enqueued_at * 1e9)),
    )
    headers["X-Call-Id"] = call.call_id
    headers["X-Function-Name"] = qualified_name(call.function)
    headers["X-Function-Status"] = str(result.status)
    headers["X-Duration-Seconds"] = f"{result.duration:f}"
    headers["X-Start-Time"] = start
    return headers


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a callback URL's POST goes."""

    origin: Origin  # whose Pool carries it
    authority: str  # the Host header: host, and port when the URL names one
    target: str  # the request target: the URL's path and query, "/" for an empty path
    authorization: str | None  # Basic credentials from the URL's user and password


@functools.lru_cache(maxsize=256)  # most calls of a deployment name one receiver or a few
def destination(url: str) -> Destination | None:
    """Where a POST to `url` goes; None when it can go nowhere (not http or https, no host, a
    port that is not one). The path and query are sent as the URL spells them."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        host = parts.hostname
        if host and not host.isascii():
            host = host.encode("idna").decode("ascii")
    except ValueError:  # a bad port, or a name IDNA cannot encode (UnicodeError)
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    bracketed = f"[{host}]" if ":" in host else host
    authority = bracketed if port is None else f"{bracketed}:{port}"
    if not all(c in _TARGET_SAFE for c in authority):
        return None
    default = 443 if parts.scheme == "https" else 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    target = urllib.parse.quote(target, safe=_TARGET_SAFE, errors="surrogateescape")
    authorization = None
    if parts.username is not None or parts.password is not None:
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    return Destination((parts.scheme, host, port or default), authority, target, authorization)


def _prepare(url: str, call: QueuedCall, result: CallResult) -> tuple[Destination, bytes] | str:
    """The destination of `url` and the bytes of the callback's POST; or why there are none."""
    where = destination(url)
    if where is None:
        return "not a URL that can be POSTed to"
    headers = callback_headers(call, result)
    if "Content-Type" not in headers:
        headers["Content-Type"] = DEFAULT_CONTENT_TYPE
    if where.authorization is not None:  # the URL's credentials, as aiohttp sent them
        headers["Authorization"] = where.authorization
    try:
        request = build_request(
            "POST",
            where.target,
            where.authority,
            list(headers.items()),
            result.body,
            user_agent=USER_AGENT,
        )
    except UnicodeEncodeError:
        return "a header that cannot be encoded"
    return where, request


class Pools:
    """One Pool per origin, kept from the least recently used to the most.

    Beyond `limit`, taking a pool for a new origin closes the least recently used one that no
    callback is using; a pool in use is never closed (its callback would fail, and be POSTed
    again), so while more than `limit` origins have callbacks in flight all are kept, and the
    excess is closed as they are given back.
    """

    def __init__(self, limit: int, make: Callable[[Destination], Pool]) -> None:
        self._limit = limit
        self._make = make
        self._pools: dict[Origin, Pool] = {}
        self._users: Counter[Origin] = Counter()

    def take(self, where: Destination) -> Pool:
        """The pool for `where`'s origin, in use until `give_back`."""
        pool = self._pools.pop(where.origin, None) or self._make(where)
        self._pools[where.origin] = pool  # the most recently used is last
        self._users[where.origin] += 1
        self._trim()
        return pool

    def give_back(self, origin: Origin) -> None:
        self._users[origin] -= 1
        if not self._users[origin]:
            del self._users[origin]
        self._trim()

    def origins(self) -> list[Origin]:
        """The origins with a pool, the least recently used first."""
        return list(self._pools)

    def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()

    def _trim(self) -> None:
        excess = len(self._pools) - self._limit
        if excess <= 0:
            return
        idle = [origin for origin in self._pools if origin not in self._users]
        for origin in idle[:excess]:
            self._pools.pop(origin).close()


class CallbackSender:
    """POSTs results to callback URLs; one per process, closed at shutdown. The wait between
    two POSTs is an `asyncio.sleep`: cancelling the sending task ends it at once."""

    def __init__(
        self,
        attempts: int = 5,
        min_wait: float = 1.0,
        max_wait: float = 30.0,
        timeout: float = 10.0,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        # Only its backoff is used: which answers are tried again is decided here.
        self._backoff = RetryPolicy(attempts, frozenset(), min_wait, max_wait)
        self._timeout = timeout
        self._rng = rng or random.Random()
        self._pools = Pools(MAX_ORIGINS, self._new_pool)
        # The system's trusted authorities, loaded once (it takes milliseconds) for every
        # https receiver, at the first one.
        self._ssl: ssl.SSLContext | None = None
        self._delivered = self._failed = self._retried = 0

    async def send(self, call: QueuedCall, result: CallResult) -> bool:
        """POST `result` to `call.callback_url` (which must be set); whether it was delivered."""
        if not call.callback_url:
            raise ValueError(f"call {call.call_id} has no callback URL")
        url = call.callback_url
        prepared = _prepare(url, call, result)  # once: every attempt sends the same bytes
        attempt = 1
        if isinstance(prepared, str):
            why: str | None = prepared
        else:
            while True:
                final, why = await self._post(*prepared)
                if why is None:
                    self._delivered += 1
                    return True
                if final or attempt >= self._backoff.attempts:
                    break
                self._retried += 1
                await asyncio.sleep(self._backoff.wait(attempt, self._rng))
                attempt += 1
        self._failed += 1
        logger.warning(
            "call %s of %s: its callback to %s was not delivered (%s, after %d attempt%s); "
            "the result is dropped",
            call.call_id,
            call.function,
            _shown(url),
            why,
            attempt,
            "" if attempt == 1 else "s",
        )
        return False

    async def _post(self, where: Destination, request: bytes) -> tuple[bool, str | None]:
        """(final, why it failed): why is None when delivered; final when trying again cannot
        help."""
        pool = self._pools.take(where)
        try:
            status = (await pool.request("POST", request)).status
        except TimeoutError:
            return False, f"no answer within {self._timeout:g}s"
        except (ConnectFailed, Disconnected, ProtocolError, OSError) as exc:
            return False, str(exc) or type(exc).__name__
        finally:
            self._pools.give_back(where.origin)
        if status < 400:
            return False, None
        return status != 429 and status < 500, f"HTTP {status}"

    def _new_pool(self, where: Destination) -> Pool:
        scheme = where.origin[0]
        if scheme == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()
        context = self._ssl if scheme == "https" else None
        return Pool(f"{scheme}://{where.authority}", self._timeout, ssl_context=context)

    def statistics(self) -> CallbackStatistics:
        return CallbackStatistics(self._delivered, self._failed, self._retried)

    async def close(self) -> None:
        """Close every receiver's connections; a later callback opens new ones."""
        self._pools.close()


def _shown(url: str) -> str:
    """The URL as logs show it: without a password it may carry."""
    try:
        return str(URL(url).with_password(None)) if URL(url).password else url
    except ValueError:
        return repr(url)
