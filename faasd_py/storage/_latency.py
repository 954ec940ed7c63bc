"""Remote blob storage in benchmarks: a store with the delays of a far one added to its calls.

What a real deployment of the Faa$T tier looks like, and so what `LatencyModel` stands for:

- object bytes live in a remote blob store (Azure Blob, S3): every data call pays a request's
  round trip (`latency`) plus a transfer time that grows with the bytes moved (`bandwidth`, per
  stream: one call is one stream);
- the version check before every cached read is a metadata lookup (an ETag / HEAD, or a version
  kept in a metadata store next to the worker): `version_latency`, which may be far smaller.

The default (`version_latency` = `latency`, no bandwidth) is the conservative model: every call,
version checks included, pays the same round trip, and size is free. The model is pure (delays
out, nothing slept); `LatencyStore` carries it out around a real store. Delays below the event
loop's timer resolution (about 1 ms: epoll waits in whole milliseconds) are rounded up by it, so
sub-millisecond latencies cannot be modelled by sleeping; use 0 and let the real store's round
trip stand for a near one.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from faasd_py.storage._base import ObjectStore, Quota, Usage, Versioned
from faasd_py.units import parse_size

_RATE = re.compile(r"^\s*(.+?)\s*(?:/\s*s)?\s*$")
# "Mb", "kb", "Gbit": bits to some, bytes to parse_size; refused rather than guessed.
_BITS = re.compile(r"[kKmMgGtT](b|bit|bits)$")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(inf|nan)$", re.I)
_OFF = ("", "0", "off", "none")


def parse_bandwidth(text: str | int | float | None) -> float | None:
    """Bytes per second from "50MB/s", "60MiB/s", "50M" or a plain number; None for off
    ("off", "none", "0", empty)."""
    if text is None:
        return None
    if isinstance(text, int | float) and not isinstance(text, bool):
        rate = float(text)
    else:
        raw = str(text).strip()
        if raw.lower() in _OFF:
            return None
        match = _RATE.match(raw)
        number = match.group(1) if match else raw
        if _BITS.search(number):
            raise ValueError(
                f"a transfer rate is in bytes, such as 50MB/s or 60MiB/s, got {text!r}"
            )
        try:
            rate = float(number) if _FLOAT.match(number) else float(parse_size(number))
        except ValueError:
            raise ValueError(
                f"expected a transfer rate such as 50MB/s, 60MiB/s or off, got {text!r}"
            ) from None
    if rate == 0:
        return None
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"a transfer rate must be above 0 bytes/s, got {text!r}")
    return rate


def format_bandwidth(rate: float) -> str:
    return f"{rate / 1e6:g}MB/s"


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """The delays added to a store's calls; all zero / None: nothing added.

    latency          seconds per data call (get, get_many, put, delete, list)
    version_latency  seconds per metadata call (version, exists); None: the same as `latency`
    bandwidth        bytes per second per call for the bytes a data call moves; None: free
    """

    latency: float = 0.0
    version_latency: float | None = None
    bandwidth: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("latency", self.latency), ("version latency", self.version_latency)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"the storage {name} must be a duration >= 0, got {value!r}")
        if self.bandwidth is not None and not (
            math.isfinite(self.bandwidth) and self.bandwidth > 0
        ):
            raise ValueError(
                f"the storage bandwidth must be above 0 bytes/s (or off), got {self.bandwidth!r}"
            )

    @property
    def metadata_latency(self) -> float:
        return self.latency if self.version_latency is None else self.version_latency

    @property
    def on(self) -> bool:
        return self.latency > 0 or self.metadata_latency > 0 or self.bandwidth is not None

    def transfer(self, nbytes: int) -> float:
        """Seconds to move `nbytes` in one stream."""
        return 0.0 if self.bandwidth is None else nbytes / self.bandwidth

    def data_call(self, nbytes: int = 0) -> float:
        """Seconds a data call that moves `nbytes` waits: one round trip and the transfer."""
        return self.latency + self.transfer(nbytes)

    def describe(self) -> str:
        """How reports and the banner name the model: "+5ms per data call, 50MB/s, version
        checks +0ms"; "" when nothing is added."""
        if not self.on:
            return ""
        parts = [f"+{self.latency * 1e3:g}ms per data call"]
        if self.bandwidth is not None:
            parts.append(format_bandwidth(self.bandwidth))
        if self.version_latency is not None and self.version_latency != self.latency:
            parts.append(f"version checks +{self.version_latency * 1e3:g}ms")
        return ", ".join(parts)


Sleep = Callable[[float], Awaitable[None]]


class LatencyStore:
    """A store with a `LatencyModel`'s delays added to its calls: remote blob storage in
    benchmarks; reports must say which model was on (`name` carries it).

    Writes wait for their round trip and upload before they reach the inner store (a remote
    write lands when its bytes have arrived); reads ask the inner store first and then wait
    for the round trip and the download of what they got (the size is known only then). One
    sleep per call, so the event loop's timer rounds each call once.
    """

    def __init__(
        self,
        inner: ObjectStore,
        latency: float | LatencyModel,
        version_latency: float | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if isinstance(latency, LatencyModel):
            if version_latency is not None:
                raise TypeError("version_latency goes in the LatencyModel")
            self.model = latency
        else:
            self.model = LatencyModel(latency, version_latency)
        self.inner = inner
        self._sleep = sleep

    @property
    def latency(self) -> float:
        return self.model.latency

    @property
    def version_latency(self) -> float:
        return self.model.metadata_latency

    @property
    def name(self) -> str:
        return f"{self.inner.name} ({self.model.describe()})"

    async def _wait(self, seconds: float) -> None:
        if seconds > 0:
            await self._sleep(seconds)

    async def get(self, app: str, key: str) -> Versioned | None:
        found = await self.inner.get(app, key)
        await self._wait(self.model.data_call(0 if found is None else len(found.data)))
        return found

    async def get_many(self, app: str, keys: Sequence[str]) -> list[Versioned | None]:
        # One pipelined round trip; its replies come back over one stream, one after another.
        found = await self.inner.get_many(app, keys)
        await self._wait(self.model.data_call(sum(len(f.data) for f in found if f is not None)))
        return found

    async def version(self, app: str, key: str) -> int | None:
        await self._wait(self.model.metadata_latency)
        return await self.inner.version(app, key)

    async def exists(self, app: str, key: str) -> bool:
        # A HEAD, or a lookup of the version where versions are kept: metadata, not bytes.
        await self._wait(self.model.metadata_latency)
        return await self.inner.exists(app, key)

    async def put(self, app: str, key: str, data: bytes, quota: Quota | None = None) -> int:
        await self._wait(self.model.data_call(len(data)))
        return await self.inner.put(app, key, data, quota)

    async def delete(self, app: str, key: str) -> bool:
        await self._wait(self.model.data_call())
        return await self.inner.delete(app, key)

    async def list(self, app: str, prefix: str = "") -> list[str]:
        keys = await self.inner.list(app, prefix)
        await self._wait(self.model.data_call(sum(len(k.encode()) for k in keys)))
        return keys

    async def usage(self, app: str) -> Usage:
        await self._wait(self.model.metadata_latency)
        return await self.inner.usage(app)

    def known_usage(self) -> dict[str, Usage]:
        return self.inner.known_usage()

    async def close(self) -> None:
        await self.inner.close()
