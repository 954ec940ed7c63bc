"""The Redis backing store (redis-py's asyncio client).

Layout, per app (the app's name is length-prefixed, so no app name and key can spell another
app's key):

    faasd:o:<len>:<app>:<key>   hash {d: bytes, v: version}     the object
    faasd:v:<len>:<app>         integer                         the app's version counter
    faasd:i:<len>:<app>         sorted set of keys, all score 0 the app's keys, for list()
    faasd:u:<len>:<app>         hash {b: bytes, k: keys}        the app's use, for its quota

A write is one Lua script (atomic in Redis): check the caller's quota against the app's use,
bump the counter, set bytes and version together, index the key, update the use. A counter that
starts over (a new app, or a Redis that lost its data) starts at
the server's clock in microseconds, not at 1: versions stay above any issued before the loss, so
a worker's cache cannot take a new object for the old one it holds under the same version.
A read is HMGET of both fields, so bytes and version always belong together; the version check
is HGET of one small field. The use of an app written before it was kept is counted once, from
its index, by the first script that needs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from faasd_py.errors import StorageUnavailable
from faasd_py.redis_connect import connect
from faasd_py.redis_connect import redact as redact  # its old home: imports of it here still work
from faasd_py.storage._base import (
    DEFAULT_STORE_TIMEOUT,
    Quota,
    Usage,
    Versioned,
    check_key,
    within,
)

T = TypeVar("T")

# The app's use (KEYS[4]): counted from its index (KEYS[3]) and objects (named ARGV[1] .. key)
# where it was never kept. Returns bytes, keys.
_USAGE = """
local function usage()
  if redis.call('EXISTS', KEYS[4]) == 0 then
    local keys = redis.call('ZRANGE', KEYS[3], 0, -1)
    local b = 0
    for _, k in ipairs(keys) do
      b = b + redis.call('HSTRLEN', ARGV[1] .. k, 'd')
    end
    redis.call('HSET', KEYS[4], 'b', b, 'k', #keys)
  end
  local u = redis.call('HMGET', KEYS[4], 'b', 'k')
  return tonumber(u[1]), tonumber(u[2])
end
"""

# ARGV: object prefix, data, key, max bytes, max keys (-1: no quota).
# Returns {version, bytes, keys}, or {0, bytes, keys, "bytes" | "keys"} when refused.
_PUT = (
    _USAGE
    + """
local b, k = usage()
local exists = redis.call('EXISTS', KEYS[1]) == 1
local old = 0
if exists then old = redis.call('HSTRLEN', KEYS[1], 'd') end
local nb = b - old + string.len(ARGV[2])
local nk = k
if not exists then nk = k + 1 end
local maxb, maxk = tonumber(ARGV[4]), tonumber(ARGV[5])
if maxk >= 0 and not exists and nk > maxk then return {0, b, k, 'keys'} end
if maxb >= 0 and nb > maxb and nb > b then return {0, b, k, 'bytes'} end
local v = redis.call('INCR', KEYS[2])
if v == 1 then
  local t = redis.call('TIME')
  v = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[2], string.format('%.0f', v))
end
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'v', v)
redis.call('ZADD', KEYS[3], 0, ARGV[3])
redis.call('HSET', KEYS[4], 'b', nb, 'k', nk)
return {v, nb, nk}
"""
)

# ARGV: object prefix, key. Returns {removed, bytes, keys}.
_DELETE = (
    _USAGE
    + """
local b, k = usage()
local old = redis.call('HSTRLEN', KEYS[1], 'd')
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[2])
if n > 0 then
  b = b - old
  k = k - 1
  redis.call('HSET', KEYS[4], 'b', b, 'k', k)
end
return {n, b, k}
"""
)

_READ_USAGE = (
    _USAGE
    + """
local b, k = usage()
return {b, k}
"""
)


class RedisStore:
    def __init__(
        self, url: str, *, connect_timeout: float = 2.0, timeout: float = DEFAULT_STORE_TIMEOUT
    ) -> None:
        self._name = redact(url)
        # A whole call (its retry included) is bounded by `timeout`: a Redis that accepts
        # connections and never answers fails the call, not the invocation that made it.
        self._timeout = timeout
        # connect() opens every form of Redis URL (Sentinel's too) with one quick retry: it covers
        # a connection Redis closed while idle; more would only delay the 503 a caller gets when
        # Redis is down (the next call reconnects by itself).
        self._redis: aioredis.Redis = connect(url, timeout=timeout, connect_timeout=connect_timeout)
        self._put = self._redis.register_script(_PUT)
        self._delete = self._redis.register_script(_DELETE)
        self._read_usage = self._redis.register_script(_READ_USAGE)
        self._known: dict[str, Usage] = {}

    @property
    def name(self) -> str:
        return self._name

    @staticmethod
    def _keys(app: str, key: str = "") -> tuple[str, str, str, str]:
        ns = f"{len(app)}:{app}"
        return f"faasd:o:{ns}:{key}", f"faasd:v:{ns}", f"faasd:i:{ns}", f"faasd:u:{ns}"

    @staticmethod
    def _objects(app: str) -> str:
        """The prefix of the app's object keys (the scripts' first argument)."""
        return f"faasd:o:{len(app)}:{app}:"

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await within(self._timeout, self._name, awaitable)
        except RedisError as exc:
            raise StorageUnavailable(self._name, f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise StorageUnavailable(self._name, str(exc)) from exc

    async def get(self, app: str, key: str) -> Versioned | None:
        check_key(key)
        fields: list[Any] = await self._call(self._redis.hmget(self._keys(app, key)[0], ["d", "v"]))
        data, version = fields
        if data is None or version is None:
            return None
        return Versioned(bytes(data), int(version))

    async def get_many(self, app: str, keys: Sequence[str]) -> list[Versioned | None]:
        for key in keys:
            check_key(key)
        # A pipeline without MULTI: one round trip; each HMGET is atomic on its own, which is
        # all a read needs (bytes and version of one object together).
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(self._keys(app, key)[0], ["d", "v"])
        rows: list[Any] = await self._call(pipe.execute())
        return [None if d is None or v is None else Versioned(bytes(d), int(v)) for d, v in rows]

    async def version(self, app: str, key: str) -> int | None:
        check_key(key)
        version = await self._call(self._redis.hget(self._keys(app, key)[0], "v"))
        return None if version is None else int(version)

    async def put(self, app: str, key: str, data: bytes, quota: Quota | None = None) -> int:
        check_key(key)
        limits = (-1, -1) if quota is None else (quota.max_bytes, quota.max_keys)
        args: list[bytes | str | int] = [self._objects(app), data, key, *limits]
        reply: Any = await self._call(self._put(keys=self._keys(app, key), args=args))
        usage = self._known[app] = Usage(int(reply[1]), int(reply[2]))
        if len(reply) > 3 and quota is not None:
            refused = reply[3].decode() if isinstance(reply[3], bytes) else str(reply[3])
            raise quota.exceeded(app, refused, usage, len(data))
        return int(reply[0])

    async def delete(self, app: str, key: str) -> bool:
        check_key(key)
        args = [self._objects(app), key]
        reply: Any = await self._call(self._delete(keys=self._keys(app, key), args=args))
        self._known[app] = Usage(int(reply[1]), int(reply[2]))
        return int(reply[0]) > 0

    async def usage(self, app: str) -> Usage:
        args = [self._objects(app)]
        reply: Any = await self._call(self._read_usage(keys=self._keys(app), args=args))
        usage = self._known[app] = Usage(int(reply[0]), int(reply[1]))
        return usage

    def known_usage(self) -> dict[str, Usage]:
        return dict(self._known)

    async def exists(self, app: str, key: str) -> bool:
        check_key(key)
        return bool(await self._call(self._redis.exists(self._keys(app, key)[0])))

    async def list(self, app: str, prefix: str = "") -> list[str]:
        index = self._keys(app)[2]
        if prefix:
            # UTF-8 never contains 0xff, so it sorts after every key with the prefix.
            low, high = b"[" + prefix.encode(), b"[" + prefix.encode() + b"\xff"
        else:
            low, high = b"-", b"+"
        members = await self._call(self._redis.zrangebylex(index, low, high))
        return [m.decode() if isinstance(m, bytes) else m for m in members]

    async def ping(self) -> None:
        await self._call(self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
