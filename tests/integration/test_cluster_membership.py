"""Workers' membership and apps' placements against a real redis-server: join, heartbeat and
list; a lease that runs out; fencing while Redis is away and joining again after; a
registration taken over is never renewed by its old owner; placements compare-and-set."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from faasd_py.cluster._membership import (
    Membership,
    Placement,
    Placements,
    WorkerInfo,
    WorkerReport,
    live_workers,
    place_app,
)
from faasd_py.cluster._placement import AppDemand, WorkerLoad
from faasd_py.errors import Conflict, Unavailable
from tests.integration._redis import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, imported for the tests here

TTL = 1.0
GB = 1 << 30
DEADLINE = 30.0  # seconds: only to catch a hang

Connect = Callable[..., aioredis.Redis]


@pytest.fixture(params=[False, True], ids=["bytes", "str"])
async def connect(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[Connect]:
    """Clients of the test's Redis (replies as bytes, or decoded), closed at teardown."""
    clients: list[aioredis.Redis] = []

    def make(**kwargs: Any) -> aioredis.Redis:
        client = aioredis.Redis.from_url(
            redis_server.url,
            decode_responses=request.param,
            socket_connect_timeout=1,
            socket_timeout=2,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
            **kwargs,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def members() -> AsyncIterator[list[Membership]]:
    """Memberships the test made: their heartbeats end with the test."""
    made: list[Membership] = []
    yield made
    for membership in made:
        # A test that stopped Redis leaves nothing to deregister from.
        with contextlib.suppress(Unavailable):
            await membership.leave()


def report(name: str, free: int = 4 * GB, apps: tuple[str, ...] = ()) -> WorkerReport:
    return WorkerReport(WorkerLoad(name, 2.0, 8 * GB, 8 * GB - free, 0.5), "none", ("shm",), apps)


def member(
    made: list[Membership], client: aioredis.Redis, name: str, address: str = "", **kw: Any
) -> Membership:
    membership = Membership(
        client, name, address or f"10.0.0.{len(made) + 1}:8081", ttl=TTL,
        report=lambda: report(name), **kw,
    )  # fmt: skip
    made.append(membership)
    return membership


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait for `check` to hold; fail after the (generous) deadline."""
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


async def names(client: aioredis.Redis) -> list[str]:
    return [w.name for w in await live_workers(client)]


# --- join, heartbeat, list --------------------------------------------------------------------


async def test_joined_workers_are_listed_with_their_report(
    connect: Connect, members: list[Membership]
) -> None:
    client = connect()
    apps: tuple[str, ...] = ()
    b = Membership(client, "b", "10.0.0.2:8081", ttl=TTL, report=lambda: report("b", 2 * GB, apps))
    members.append(b)
    a = member(members, client, "a", "10.0.0.1:8081")
    epoch_b = await b.join()
    epoch_a = await a.join()
    assert epoch_a > epoch_b > 0
    assert a.holds_lease and b.holds_lease
    a.start()
    b.start()

    workers = await live_workers(client)
    assert [w.name for w in workers] == ["a", "b"]
    info = workers[1]
    assert (info.address, info.epoch, info.isolation, info.channels) == (
        "10.0.0.2:8081",
        epoch_b,
        "none",
        ("shm",),
    )
    assert info.load == WorkerLoad("b", 2.0, 8 * GB, 6 * GB, 0.5)
    assert info.started_at <= info.heartbeat_at
    assert abs(info.heartbeat_at - time.time()) < 60  # Redis's clock: the same host here
    assert info.to_json()["load"]["memory_reserved"] == 6 * GB
    assert info.to_json()["address"] == "10.0.0.2:8081"

    # Heartbeats carry the current report and keep the lease past its ttl.
    apps = ("shop",)

    async def reported() -> bool:
        infos = {w.name: w for w in await live_workers(client)}
        return infos["b"].apps == ("shop",) and infos["b"].heartbeat_at > info.heartbeat_at

    await eventually(reported)
    await asyncio.sleep(TTL * 1.5)
    assert await names(client) == ["a", "b"]
    assert a.holds_lease and b.holds_lease


async def test_a_worker_that_stops_heartbeating_drops_out_after_its_ttl(
    connect: Connect, members: list[Membership]
) -> None:
    client = connect()
    quiet = member(members, client, "quiet")
    await quiet.join()  # and never starts its heartbeat
    assert await names(client) == ["quiet"]

    async def gone() -> bool:
        return await names(client) == []

    await eventually(gone)
    assert not quiet.holds_lease


async def test_leave_deregisters_at_once(connect: Connect, members: list[Membership]) -> None:
    client = connect()
    a = member(members, client, "a")
    await a.join()
    a.start()
    await a.leave()
    assert await names(client) == []
    assert not a.holds_lease


# --- names ------------------------------------------------------------------------------------


async def test_a_live_name_at_another_address_is_a_conflict(
    connect: Connect, members: list[Membership]
) -> None:
    client = connect()
    first = member(members, client, "w", "10.0.0.1:8081")
    await first.join()
    first.start()
    with pytest.raises(Conflict, match=re.escape("10.0.0.1:8081")):
        await member(members, client, "w", "10.0.0.9:8081").join()
    assert [w.address for w in await live_workers(client)] == ["10.0.0.1:8081"]


async def test_the_same_worker_restarting_takes_over_its_name_and_fences_the_old_one(
    connect: Connect, members: list[Membership]
) -> None:
    client = connect()
    fenced = asyncio.Event()

    async def stop_old() -> None:
        # The old process would be gone: it must not join again and take the name back.
        fenced.set()
        await old.leave()

    old = member(members, client, "w", "10.0.0.1:8081", on_fenced=stop_old)
    old_epoch = await old.join()
    old.start()
    new = member(members, connect(), "w", "10.0.0.1:8081")
    assert await new.join() > old_epoch
    new.start()
    async with asyncio.timeout(DEADLINE):
        await fenced.wait()
    assert not old.holds_lease
    await asyncio.sleep(TTL * 1.5)  # the old one's heartbeat has ended: nothing takes it back
    assert new.holds_lease
    assert [w.epoch for w in await live_workers(client)] == [new.epoch]


async def test_a_registration_taken_over_after_expiry_is_not_renewed_by_its_old_owner(
    connect: Connect, members: list[Membership]
) -> None:
    client, admin = connect(), connect()
    fenced = asyncio.Event()
    old = member(members, client, "w", "10.0.0.1:8081", on_fenced=fenced.set)
    await old.join()
    old.start()
    # The old owner's key expires (as if Redis expired it early: the old owner still counts
    # on its lease) and another worker registers under the name.
    await admin.delete("faasd:cluster:worker:w")
    taker = member(members, admin, "w", "10.0.0.2:8081")
    taker_epoch = await taker.join()
    taker.start()

    async with asyncio.timeout(DEADLINE):
        await fenced.wait()
    assert not old.holds_lease
    # Its joins again meet a live owner: it stays fenced, the registration stays the taker's.
    await asyncio.sleep(TTL * 1.5)
    assert not old.holds_lease
    workers = await live_workers(client)
    assert [(w.address, w.epoch) for w in workers] == [("10.0.0.2:8081", taker_epoch)]


# --- Redis away -------------------------------------------------------------------------------


async def test_fenced_while_redis_is_away_and_joins_again_with_a_higher_epoch(
    connect: Connect, members: list[Membership], redis_server: RedisServer
) -> None:
    client = connect()
    fenced = asyncio.Event()
    rejoined: list[int] = []
    calls: list[str] = []

    def on_fenced() -> None:
        calls.append("fenced")
        fenced.set()

    async def on_rejoined(epoch: int) -> None:  # callbacks may be coroutines
        calls.append("rejoined")
        rejoined.append(epoch)

    w = member(members, client, "w", on_fenced=on_fenced, on_rejoined=on_rejoined)
    first = await w.join()
    w.start()
    redis_server.stop()
    async with asyncio.timeout(DEADLINE):
        await fenced.wait()
    assert not w.holds_lease
    with pytest.raises(Unavailable, match="cluster store"):
        await live_workers(client)

    # Redis comes back empty (no persistence): the worker joins again by itself.
    redis_server.start()

    async def back() -> bool:
        return bool(rejoined)

    await eventually(back)
    assert calls == ["fenced", "rejoined"]
    assert rejoined[0] > first and w.epoch == rejoined[0]
    assert w.holds_lease
    assert [i.epoch for i in await live_workers(client)] == [rejoined[0]]


async def test_calls_while_redis_is_away_are_503_naming_the_store(
    connect: Connect, redis_server: RedisServer
) -> None:
    client = connect()
    redis_server.stop()
    membership = Membership(client, "w", "10.0.0.1:8081", ttl=TTL, report=lambda: report("w"))
    for call in (membership.join(), Placements(client).get("shop"), live_workers(client)):
        with pytest.raises(Unavailable, match=f"cluster store unavailable .*{redis_server.port}"):
            await call


# --- placements -------------------------------------------------------------------------------


def infos(*loads: WorkerLoad) -> list[WorkerInfo]:
    return [
        WorkerInfo(load.name, f"{load.name}:8081", 1, load, "none", ("shm",), (), 0.0, 0.0)
        for load in loads
    ]


async def test_put_is_a_compare_and_set(connect: Connect) -> None:
    placements = Placements(connect())
    assert await placements.get("shop") is None
    first = await placements.put("shop", ("a",), None)
    assert first is not None and first.workers == ("a",)
    assert await placements.put("shop", ("b",), None) is None  # it exists now
    second = await placements.put("shop", ("a", "b"), first.version)
    assert second is not None and second.version > first.version
    assert await placements.put("shop", ("c",), first.version) is None  # stale
    assert await placements.get("shop") == second

    await placements.put("blog", ("c",), None)
    assert list(await placements.all()) == ["blog", "shop"]
    await placements.delete("shop")
    assert await placements.get("shop") is None
    # Made again, it never reuses a version: the stale read cannot pass for it.
    third = await placements.put("shop", ("a",), None)
    assert third is not None and third.version > second.version
    assert await placements.put("shop", ("b",), second.version) is None


async def test_racing_gateways_end_on_one_placement(connect: Connect) -> None:
    workers = infos(
        WorkerLoad("a", 2, 8 * GB, 2 * GB, 0.1),
        WorkerLoad("b", 2, 8 * GB, 1 * GB, 0.1),
        WorkerLoad("c", 2, 8 * GB, 4 * GB, 0.1),
    )
    demand = AppDemand("shop", GB, 9)  # more than b holds: spread over b and a
    gateways = [Placements(connect()) for _ in range(6)]
    results: list[Placement] = await asyncio.gather(
        *(place_app(g, demand, workers) for g in gateways)
    )
    assert len(set(results)) == 1
    assert results[0].workers == ("b", "a")
    assert await gateways[0].get("shop") == results[0]

    # Once b alone holds the demand, the placement shrinks back to it.
    smaller = await place_app(gateways[1], AppDemand("shop", GB, 2), workers)
    assert smaller.workers == ("b",) and smaller.version > results[0].version


async def test_an_app_moves_off_a_dead_worker(connect: Connect) -> None:
    placements = Placements(connect())
    a, b = WorkerLoad("a", 2, 8 * GB, 0, 0), WorkerLoad("b", 2, 8 * GB, GB, 0)
    placed = await place_app(placements, AppDemand("shop", GB, 1), infos(a, b))
    assert placed.workers == ("a",)
    moved = await place_app(placements, AppDemand("shop", GB, 1), infos(b))
    assert moved.workers == ("b",) and moved.version > placed.version


async def test_no_live_worker_is_503(connect: Connect) -> None:
    with pytest.raises(Unavailable, match="no live worker"):
        await place_app(Placements(connect()), AppDemand("shop", GB, 1), [])
