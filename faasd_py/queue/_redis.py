"""The Redis Streams queue of async calls (`up --queue redis://...`): shared by any number of
gateways and consumers on any number of hosts. Needs Redis 6.2 or later (XAUTOCLAIM).

Layout (a function's ref is DNS labels joined by dots, so it never contains ':' and no
function's keys can spell another's, nor the two global ones):

    faasd:queue:functions          set of function refs      the functions statistics() and
                                                             the all-functions operations visit
    faasd:queue:doorbell           pub/sub channel           rung by retry, replay, and an
                                                             enqueue when no call waited
    faasd:queue:fn:<ref>:calls     stream {c: call, a: n}    calls waiting or in flight (XLEN),
                                   + consumer group          attempt n; the group's pending
                                     "consumers"             entries list (PEL) is the leases
    faasd:queue:fn:<ref>:delayed   sorted set, by due time   retries not yet due, members
                                   (ms, Redis's clock)       "<attempt>:<stream id>:<call>"
    faasd:queue:fn:<ref>:dead      stream {c, a, r}          dead letters: call, attempts,
                                                             reason; the id's ms is failed_at
    faasd:queue:fn:<ref>:retries   integer                   retries scheduled (a counter)

Every operation that changes more than one key is one Lua script, and a script runs atomically
in Redis: an enqueue checks the depth (stream length + retries waiting) and adds the call in one
step, so concurrent enqueues cannot overshoot `max_depth`; retry and dead_letter take the entry
out of the stream and its lease (XACK + XDEL) and put it in the delayed set or the dead letters
in one step, so a call is never both in flight and waiting, nor lost between; take moves due
retries into the stream, reclaims expired leases (XAUTOCLAIM with min-idle-time = the lease)
and reads new calls (XREADGROUP) in one step. "Now" is always Redis's TIME, so that hosts whose
clocks disagree agree on when a retry is due and when a lease ran out. (statistics() and
wait_for_calls visit every known function's keys from one script, naming them from a prefix:
a single Redis, not a Redis Cluster.)

A lease is an entry in the group's PEL: its idle time is the time since it was taken or last
extended (XCLAIM ... JUSTID by the same consumer resets it). ack, extend, retry and dead_letter
act only while the delivery is still leased to the consumer that took it (XPENDING by consumer):
a consumer whose lease ran out and was taken by another cannot steal it back, end it under the
other's feet, or retry it a second time; its late ack is a harmless no-op.

Round trips: the operations of every call (enqueue, take, ack, extend, retry, dead_letter) are
sent together, as one pipeline on one connection, those of a round of the event loop or those
that came while the last pipeline was out (`_Rounds`): under load one round trip serves many.
Each is still its own script, atomic on its own; they succeed or fail one by one.

Durability: an enqueue that returned was written by Redis; whether it survives a crash of Redis
itself is Redis's AOF setting (appendonly yes with appendfsync always: every acknowledged
enqueue survives; everysec: the last second may be lost; no AOF: a restart loses the queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from faasd_py.queue._base import (
    DeadLetter,
    Delivery,
    QueuedCall,
    QueueFull,
    QueueStatistics,
    QueueUnavailable,
)
from faasd_py.redis_connect import connect, redact

T = TypeVar("T")

_log = logging.getLogger(__name__)

_FUNCTIONS = "faasd:queue:functions"
_DOORBELL = "faasd:queue:doorbell"
_FUNCTION_PREFIX = "faasd:queue:fn:"
_GROUP = "consumers"
_MAX_CONNECTIONS = 32  # per queue object; one is the doorbell's while a consumer waits
_REPLAY_BATCH = 500  # dead letters one replay script moves (each is atomic on its own)
_DRAIN_RINGS = 1000  # rings a wait swallows at most after the one that woke it
_STREAM_ID = re.compile(r"\d+-\d+")

# Shared by the scripts. A stream is created with its group (from its first entry on), so that
# every other script can count on the group where the stream exists.
_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function add_call(calls, group, call, attempt)
  if redis.call('EXISTS', calls) == 0 then
    redis.call('XGROUP', 'CREATE', calls, group, '0', 'MKSTREAM')
  end
  redis.call('XADD', calls, '*', 'c', call, 'a', attempt)
end
local function fields(entry)
  local f = {}
  for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
  return f
end
-- The entry of `id` if it is leased to `consumer`, else nil.
local function leased(calls, group, id, consumer)
  if redis.call('EXISTS', calls) == 0 then return nil end
  if #redis.call('XPENDING', calls, group, id, id, 1, consumer) == 0 then return nil end
  return redis.call('XRANGE', calls, id, id)[1]
end
-- End a lease: the entry leaves the PEL and the stream together.
local function remove(calls, group, id)
  redis.call('XACK', calls, group, id)
  redis.call('XDEL', calls, id)
end
"""

# KEYS: calls, delayed, functions. ARGV: group, call, max depth, function, doorbell.
# Returns 1, or 0 when the function's queue is full.
_ENQUEUE = (
    _LIB
    + """
local length = redis.call('XLEN', KEYS[1])
if length + redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
-- Ring only when no call of the function was waiting (all of the stream leased): a consumer
-- that asked for more than there was sleeps until a ring, and one already waiting rang it.
local leased = 0
if length > 0 then leased = redis.call('XPENDING', KEYS[1], ARGV[1])[1] end
add_call(KEYS[1], ARGV[1], ARGV[2], 1)
redis.call('SADD', KEYS[3], ARGV[4])
if length - leased == 0 then redis.call('PUBLISH', ARGV[5], ARGV[4]) end
return 1
"""
)

# KEYS: calls, delayed. ARGV: group, consumer, count, lease (ms).
# Returns up to `count` entries {id, {field, value, ...}}: reclaimed ones first, then new ones.
_TAKE = (
    _LIB
    + """
local group, consumer, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], '-inf', now, 'BYSCORE', 'LIMIT', 0, count)) do
  local a = string.find(m, ':', 1, true)
  local c = string.find(m, ':', a + 1, true)
  add_call(KEYS[1], group, string.sub(m, c + 1), string.sub(m, 1, a - 1))
  redis.call('ZREM', KEYS[2], m)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local out = {}
-- The whole PEL is scanned if need be: it holds only calls in flight, and an expired lease
-- may sit behind many live ones.
local cursor = '0-0'
repeat
  local r = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, ARGV[4], cursor,
                       'COUNT', count - #out)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    if e and e[2] then table.insert(out, e) end
  end
until cursor == '0-0' or #out >= count
if #out < count then
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out,
                       'STREAMS', KEYS[1], '>')
  if r then
    for _, e in ipairs(r[1][2]) do table.insert(out, e) end
  end
end
return out
"""
)

# KEYS: calls. ARGV: group, consumer, id. Returns 1 if it was leased to the consumer.
_ACK = (
    _LIB
    + """
if not leased(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
remove(KEYS[1], ARGV[1], ARGV[3])
return 1
"""
)

# KEYS: calls. ARGV: group, consumer, id. Resets the lease's idle time.
_EXTEND = (
    _LIB
    + """
if not leased(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""
)

# KEYS: calls, delayed, retries. ARGV: group, consumer, id, wait (ms), function, doorbell.
_RETRY = (
    _LIB
    + """
local entry = leased(KEYS[1], ARGV[1], ARGV[3], ARGV[2])
if not entry then return 0 end
local f = fields(entry)
remove(KEYS[1], ARGV[1], ARGV[3])
local member = (tonumber(f['a']) + 1) .. ':' .. ARGV[3] .. ':' .. f['c']
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[4]), member)
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[6], ARGV[5])
return 1
"""
)

# KEYS: calls, dead. ARGV: group, consumer, id, reason.
_DEAD_LETTER = (
    _LIB
    + """
local entry = leased(KEYS[1], ARGV[1], ARGV[3], ARGV[2])
if not entry then return 0 end
local f = fields(entry)
remove(KEYS[1], ARGV[1], ARGV[3])
redis.call('XADD', KEYS[2], '*', 'c', f['c'], 'a', f['a'], 'r', ARGV[4])
return 1
"""
)

# KEYS: calls, dead, functions. ARGV: group, function, doorbell, limit, dead letter ids...
# Moves those named (else the oldest `limit`) back as new calls; returns how many.
_REPLAY = (
    _LIB
    + """
local entries = {}
if #ARGV > 4 then
  for i = 5, #ARGV do
    local e = redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i])[1]
    if e then table.insert(entries, e) end
  end
else
  entries = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', tonumber(ARGV[4]))
end
for _, e in ipairs(entries) do
  add_call(KEYS[1], ARGV[1], fields(e)['c'], 1)
  redis.call('XDEL', KEYS[2], e[1])
end
if #entries > 0 then
  redis.call('SADD', KEYS[3], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return #entries
"""
)

# KEYS: calls, delayed, dead, retries, functions. ARGV: function. Returns calls dropped.
_PURGE = """
local n = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + redis.call('XLEN', KEYS[3])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('SREM', KEYS[5], ARGV[1])
return n
"""

# The two scripts that visit every known function build its keys from ARGV[1] (the prefix).

# KEYS: functions. ARGV: prefix, group. Returns {function, depth, in flight, age of the oldest
# waiting (ms, -1: none), retries, dead letters} per function.
_STATISTICS = (
    _LIB
    + """
local now = now_ms()
local out = {}
for _, fn in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local calls = ARGV[1] .. fn .. ':calls'
  local delayed = ARGV[1] .. fn .. ':delayed'
  local length = redis.call('XLEN', calls)
  local pending = 0
  local oldest = -1
  if redis.call('EXISTS', calls) == 1 then
    pending = redis.call('XPENDING', calls, ARGV[2])[1]
    -- Entries after the group's last delivered id were never taken: the oldest waits longest.
    local last = '0-0'
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', calls)) do
      local info = {}
      for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
      if info['name'] == ARGV[2] then last = info['last-delivered-id'] end
    end
    local first = redis.call('XRANGE', calls, '(' .. last, '+', 'COUNT', 1)[1]
    if first then oldest = tonumber(string.match(first[1], '^(%d+)')) end
  end
  -- A retry that is due and not yet moved to the stream has waited since it fell due.
  local due = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if due[2] and tonumber(due[2]) <= now and (oldest < 0 or tonumber(due[2]) < oldest) then
    oldest = tonumber(due[2])
  end
  local age = -1
  if oldest >= 0 then age = math.max(0, now - oldest) end
  local retries = tonumber(redis.call('GET', ARGV[1] .. fn .. ':retries') or '0')
  local dead = redis.call('XLEN', ARGV[1] .. fn .. ':dead')
  local depth = length - pending + redis.call('ZCARD', delayed)
  table.insert(out, {fn, depth, pending, age, retries, dead})
end
return out
"""
)

# KEYS: functions. ARGV: prefix. Returns ms until the earliest retry falls due (<= 0: one is
# due now), or -1 when no retry waits.
_NEXT_DUE = (
    _LIB
    + """
local earliest = nil
for _, fn in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local due = redis.call('ZRANGE', ARGV[1] .. fn .. ':delayed', 0, 0, 'WITHSCORES')
  if due[2] and (earliest == nil or tonumber(due[2]) < earliest) then
    earliest = tonumber(due[2])
  end
end
if earliest == nil then return -1 end
return math.max(0, earliest - now_ms())
"""
)


class RedisCallQueue:
    """A CallQueue on Redis Streams (see the module's docstring)."""

    def __init__(
        self, url: str, *, lease: float, timeout: float, connect_timeout: float = 2.0
    ) -> None:
        self._name = redact(url)
        self._lease_ms = max(1, round(lease * 1000))
        # Every public method is bounded by `timeout` as a whole (its retry included): a Redis
        # that accepts connections and never answers fails the call with QueueUnavailable.
        self._timeout = timeout
        # A burst of calls waits its turn for one of a bounded set of connections (each call is
        # one short script) rather than opening a connection per call. One quick retry covers a
        # connection Redis closed while idle; more would only delay the 503 a caller gets when
        # Redis is down. (A retried enqueue may store its call twice: delivery is at least once
        # anyway.)
        self._redis: aioredis.Redis = connect(
            url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_connections=_MAX_CONNECTIONS,
            blocking=True,
        )
        self._enqueue = self._redis.register_script(_ENQUEUE)
        self._take = self._redis.register_script(_TAKE)
        self._ack = self._redis.register_script(_ACK)
        self._extend = self._redis.register_script(_EXTEND)
        self._retry = self._redis.register_script(_RETRY)
        self._dead_letter = self._redis.register_script(_DEAD_LETTER)
        self._replay = self._redis.register_script(_REPLAY)
        self._purge = self._redis.register_script(_PURGE)
        self._statistics = self._redis.register_script(_STATISTICS)
        self._next_due = self._redis.register_script(_NEXT_DUE)
        self._rounds = _Rounds(self._redis)
        # The doorbell holds a connection of its own (a subscribed connection can do nothing
        # else); subscribed by the first wait_for_calls, and again after a failure.
        self._doorbell: PubSub | None = None
        # Set while a task listens on the doorbell; others wait for it rather than read too.
        self._listening: asyncio.Event | None = None

    @property
    def name(self) -> str:
        return self._name

    # --- calls ---------------------------------------------------------------------------------

    async def enqueue(self, call: QueuedCall, max_depth: int) -> None:
        calls, delayed, _, _ = _keys(call.function)
        args: list[bytes | str | int] = [_GROUP, call.encode(), max_depth, call.function, _DOORBELL]
        stored = await self._call(
            self._rounds.run(self._enqueue, [calls, delayed, _FUNCTIONS], args)
        )
        if not stored:
            raise QueueFull(call.function, max_depth)

    async def take(self, consumer: str, function: str, count: int) -> list[Delivery]:
        if count < 1:
            return []
        calls, delayed, _, _ = _keys(function)
        args: list[str | int] = [_GROUP, consumer, count, self._lease_ms]
        entries: list[Any] = await self._call(self._rounds.run(self._take, [calls, delayed], args))
        deliveries = []
        for entry_id, flat in entries:
            stream_id = _text(entry_id)
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            try:
                call = QueuedCall.decode(bytes(fields[b"c"]))
                attempt = int(fields[b"a"])
            except (KeyError, ValueError) as exc:
                # Perhaps a newer faasd-py's encoding: left leased, it goes back to the queue
                # when the lease runs out, for a consumer that can read it.
                _log.error(
                    "%s: call %s of %s is unreadable: %s", self._name, stream_id, function, exc
                )
                continue
            deliveries.append(Delivery(f"{consumer}:{stream_id}", call, attempt))
        return deliveries

    async def wait_for_calls(self, at_most: float) -> None:
        at_most = max(0.0, at_most)
        if (listening := self._listening) is not None:
            # Another task of this process listens on the doorbell: its wake-up is ours too.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(at_most):
                    await listening.wait()
            return
        listening = self._listening = asyncio.Event()
        try:
            await self._call(self._wait(at_most), at_most + self._timeout)
        except BaseException:
            # Cut off mid-read (a failure, the timeout, a cancel), the subscribed connection may
            # hold half a message: the next wait subscribes on a new one.
            await self._hang_up()
            raise
        finally:
            self._listening = None
            listening.set()

    async def _wait(self, at_most: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + at_most
        doorbell = self._doorbell
        if doorbell is None:
            doorbell = self._doorbell = self._redis.pubsub(ignore_subscribe_messages=True)
            await doorbell.subscribe(_DOORBELL)
            return  # a ring before the subscription went unheard: the caller looks now
        until_due = int(await self._next_due(keys=[_FUNCTIONS], args=[_FUNCTION_PREFIX]))
        if until_due >= 0:
            deadline = min(deadline, loop.time() + until_due / 1000)
        # get_message answers None for a subscription's confirmation too: wait on to the end.
        while (left := deadline - loop.time()) > 0:
            if await doorbell.get_message(ignore_subscribe_messages=True, timeout=left):
                break
        # Rings already here were for calls the caller is about to take: swallow them, so that
        # the next wait does not return at once for each.
        for _ in range(_DRAIN_RINGS):
            if not await doorbell.get_message(ignore_subscribe_messages=True, timeout=0):
                break

    async def _hang_up(self) -> None:
        doorbell, self._doorbell = self._doorbell, None
        if doorbell is not None:
            try:
                await doorbell.aclose()
            except (RedisError, OSError) as exc:
                _log.debug("%s: closing the doorbell: %s", self._name, exc)

    async def extend(self, delivery: Delivery) -> None:
        await self._leased(self._extend, delivery, [])

    async def ack(self, delivery: Delivery) -> None:
        await self._leased(self._ack, delivery, [])

    async def retry(self, delivery: Delivery, wait: float) -> None:
        function = delivery.call.function
        calls, delayed, _, retries = _keys(function)
        wait_ms = max(0, round(wait * 1000))
        await self._leased(
            self._retry, delivery, [wait_ms, function, _DOORBELL], [calls, delayed, retries]
        )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        calls, _, dead, _ = _keys(delivery.call.function)
        await self._leased(self._dead_letter, delivery, [reason], [calls, dead])

    async def _leased(
        self,
        script: AsyncScript,
        delivery: Delivery,
        args: list[str | int],
        keys: list[str] | None = None,
    ) -> None:
        """Run one of the scripts that act on a delivery only while it is still leased to the
        consumer that took it (a no-op otherwise)."""
        consumer, _, stream_id = delivery.id.rpartition(":")
        if not _STREAM_ID.fullmatch(stream_id):
            raise ValueError(f"not a delivery of the Redis queue: {delivery.id!r}")
        keys = keys or [_keys(delivery.call.function)[0]]
        await self._call(self._rounds.run(script, keys, [_GROUP, consumer, stream_id, *args]))

    # --- dead letters --------------------------------------------------------------------------

    async def dead_letters(self, function: str | None = None, limit: int = 100) -> list[DeadLetter]:
        return await self._call(self._read_dead_letters(function, limit))

    async def _read_dead_letters(self, function: str | None, limit: int) -> list[DeadLetter]:
        functions = [function] if function is not None else await self._functions()
        if limit < 1 or not functions:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for fn in functions:
            pipe.xrange(_keys(fn)[2], "-", "+", count=limit)
        replies: list[Any] = await pipe.execute()
        letters: list[tuple[tuple[int, int], DeadLetter]] = []
        for fn, entries in zip(functions, replies, strict=True):
            for entry_id, fields in entries:
                stream_id = _text(entry_id)
                try:
                    call = QueuedCall.decode(bytes(fields[b"c"]))
                    attempts = int(fields[b"a"])
                except (KeyError, ValueError) as exc:
                    _log.error(
                        "%s: dead letter %s of %s is unreadable: %s", self._name, stream_id, fn, exc
                    )
                    continue
                ms, seq = (int(part) for part in stream_id.split("-"))
                reason = _text(fields.get(b"r", b""))
                letter = DeadLetter(f"{fn}:{stream_id}", call, attempts, reason, ms / 1000)
                letters.append(((ms, seq), letter))
        letters.sort(key=lambda pair: pair[0])
        return [letter for _, letter in letters[:limit]]

    async def replay(self, function: str | None = None, ids: Sequence[str] = ()) -> int:
        return await self._call(self._replay_all(function, ids))

    async def _replay_all(self, function: str | None, ids: Sequence[str]) -> int:
        if ids:
            named: dict[str, list[str]] = {}
            for letter_id in ids:
                fn, _, stream_id = letter_id.rpartition(":")
                # An id not of a dead letter here names none: nothing to replay.
                if _STREAM_ID.fullmatch(stream_id) and function in (None, fn):
                    named.setdefault(fn, []).append(stream_id)
            return sum(
                [await self._replay_some(fn, stream_ids) for fn, stream_ids in named.items()]
            )
        moved = 0
        for fn in [function] if function is not None else await self._functions():
            while (batch := await self._replay_some(fn, [])) > 0:
                moved += batch
                if batch < _REPLAY_BATCH:
                    break
        return moved

    async def _replay_some(self, function: str, stream_ids: list[str]) -> int:
        calls, _, dead, _ = _keys(function)
        args: list[str | int] = [_GROUP, function, _DOORBELL, _REPLAY_BATCH, *stream_ids]
        return int(await self._replay(keys=[calls, dead, _FUNCTIONS], args=args))

    # --- the whole queue -----------------------------------------------------------------------

    async def statistics(self) -> dict[str, QueueStatistics]:
        rows: list[Any] = await self._call(
            self._statistics(keys=[_FUNCTIONS], args=[_FUNCTION_PREFIX, _GROUP])
        )
        stats = {}
        for fn, depth, in_flight, age_ms, retries, dead in rows:
            if depth == in_flight == retries == dead == 0:
                continue  # known, and nothing to show: every call of it ended
            function = _text(fn)
            stats[function] = QueueStatistics(
                function, int(depth), int(in_flight), max(0, age_ms) / 1000, retries, dead
            )
        return stats

    async def purge(self, function: str) -> int:
        keys = [*_keys(function), _FUNCTIONS]
        return int(await self._call(self._purge(keys=keys, args=[function])))

    async def close(self) -> None:
        await self._rounds.wait()
        await self._hang_up()
        await self._redis.aclose()

    # --- helpers -------------------------------------------------------------------------------

    async def _functions(self) -> list[str]:
        members: set[bytes | str] = await self._redis.smembers(_FUNCTIONS)
        return sorted(_text(m) for m in members)

    async def _call(self, awaitable: Awaitable[T], seconds: float | None = None) -> T:
        """`awaitable`'s result, or QueueUnavailable naming the queue: after `seconds` (the
        queue's timeout by default), or for any error of Redis or of the connection."""
        seconds = self._timeout if seconds is None else seconds
        try:
            async with asyncio.timeout(seconds):
                return await awaitable
        except TimeoutError:
            raise QueueUnavailable(self._name, f"no answer within {seconds:g}s") from None
        except RedisError as exc:
            raise QueueUnavailable(self._name, f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise QueueUnavailable(self._name, str(exc)) from exc


class _Rounds:
    """Sends the scripts called while the loop goes round once as one pipeline (no MULTI: each
    script is atomic by itself), and hands each caller its own reply or error. One pipeline is
    out at a time: the calls made meanwhile go together in the next, when its replies came.
    (Measured against a pipeline per round, several out at once, on the async benchmark with
    Redis: about 20% more calls/s and a lower enqueue p99; fewer, larger round trips wake
    redis-server less often on a busy machine.) A script Redis does not know (it restarted,
    or was flushed) is loaded and its call sent again, once."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._pending: list[tuple[AsyncScript, list[Any], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, [len(keys), *keys, *args], done))
        if len(self._pending) == 1 and not self._sending:
            loop.call_soon(self._send)
        return await done

    def _send(self) -> None:
        if not self._pending or self._sending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.create_task(self._pipeline(batch))
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._send()  # what came meanwhile

    async def _pipeline(
        self, batch: list[tuple[AsyncScript, list[Any], asyncio.Future[Any]]]
    ) -> None:
        try:
            replies = await self._execute(batch)
            unknown = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if unknown:
                for script in {batch[i][0] for i in unknown}:
                    await self._redis.script_load(script.script)
                again = await self._execute([batch[i] for i in unknown])
                for i, reply in zip(unknown, again, strict=True):
                    replies[i] = reply
        except BaseException as exc:  # (the connection failed, or this task was cancelled)
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, done), reply in zip(batch, replies, strict=True):
            if done.done():  # (its caller gave up: timed out, or was cancelled)
                continue
            if isinstance(reply, Exception):
                done.set_exception(reply)
            else:
                done.set_result(reply)

    async def _execute(
        self, batch: list[tuple[AsyncScript, list[Any], asyncio.Future[Any]]]
    ) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for script, args, _ in batch:
                pipe.evalsha(script.sha, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def wait(self) -> None:
        """Until what was sent has its replies (before the connections close)."""
        while self._pending or self._sending:
            if self._pending:
                await asyncio.sleep(0)  # (the round's send is due at once)
            else:
                await asyncio.wait(set(self._sending))


def _keys(function: str) -> tuple[str, str, str, str]:
    """The function's calls, delayed retries, dead letters and retry counter."""
    base = f"{_FUNCTION_PREFIX}{function}"
    return f"{base}:calls", f"{base}:delayed", f"{base}:dead", f"{base}:retries"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
