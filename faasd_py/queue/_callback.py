"""The result of an async call, POSTed to the call's X-Callback-Url as OpenFaaS's queue-worker
does: the function's body, the function's response headers (less those of one connection), and
X-Call-Id, X-Function-Name (NAME.NAMESPACE), X-Function-Status, X-Duration-Seconds and
X-Start-Time (when the gateway accepted the call, ns since the epoch).

Delivery is best effort, at most `attempts` POSTs: connection errors, time-outs, 429 and 5xx
answers are tried again after an exponential backoff; any other 4xx is final. A callback that
is never delivered is logged once and counted; it does not make the call run again. (A call
that runs again, because its consumer died, may POST its callback again: a receiver sees each
call at least once when it is reachable, and should key on X-Call-Id.)"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from faasd_py.queue._base import QueuedCall, RetryPolicy
from faasd_py.queue._invoker import HOP_BY_HOP, CallResult
from faasd_py.spec import qualified_name

logger = logging.getLogger(__name__)

# Characters aiohttp refuses in a header (it raises rather than send a forged line). The runtime
# keeps a handler from sending them, but a function's code shares its process.
_UNSENDABLE = ("\r", "\n", "\0")


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
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._delivered = self._failed = self._retried = 0

    async def send(self, call: QueuedCall, result: CallResult) -> bool:
        """POST `result` to `call.callback_url` (which must be set); whether it was delivered."""
        if not call.callback_url:
            raise ValueError(f"call {call.call_id} has no callback URL")
        url = call.callback_url
        headers = callback_headers(call, result)
        attempt = 0
        while True:
            attempt += 1
            final, why = await self._post(url, headers, result.body)
            if why is None:
                self._delivered += 1
                return True
            if final or attempt >= self._backoff.attempts:
                break
            self._retried += 1
            await asyncio.sleep(self._backoff.wait(attempt, self._rng))
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

    async def _post(
        self, url: str, headers: CIMultiDict[str], body: bytes
    ) -> tuple[bool, str | None]:
        """(final, why it failed): why is None when delivered; final when trying again cannot
        help."""
        try:
            async with self._client().post(url, headers=headers, data=body) as response:
                status = response.status
        except aiohttp.InvalidURL:
            return True, "not a URL that can be POSTed to"
        except TimeoutError:
            return False, f"no answer within {self._timeout.total:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            return False, str(exc) or type(exc).__name__
        if status < 400:
            return False, None
        return status != 429 and status < 500, f"HTTP {status}"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def statistics(self) -> CallbackStatistics:
        return CallbackStatistics(self._delivered, self._failed, self._retried)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _shown(url: str) -> str:
    """The URL as logs show it: without a password it may carry."""
    try:
        return str(URL(url).with_password(None)) if URL(url).password else url
    except ValueError:
        return repr(url)
