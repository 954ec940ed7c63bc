"""The registry's contract (faasd_py.store.Registry, with policy states and cache statistics),
run against both registries: the embedded SQLite one and RedisRegistry on a real redis-server.
Then what only the Redis one promises: secrets sealed, a wrong cluster key refused, Unavailable
when Redis is gone, several gateways on one Redis, change messages."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from faasd_py.cluster._keys import ClusterKey, ClusterKeyMismatch
from faasd_py.errors import Unavailable
from faasd_py.spec import DEFAULT_NAMESPACE, FunctionSpec
from faasd_py.store import CHANGES, Namespace, RedisRegistry, SqliteRegistry
from tests.integration._redis import RedisServer, redis_server

__all__ = ["redis_server"]  # a fixture, used by name

HANG = 30.0  # deadlines only catch hangs

KEY = ClusterKey(secrets.token_bytes(32), "test key")

AnyRegistry = SqliteRegistry | RedisRegistry


def client(url: str, **options: Any) -> aioredis.Redis:
    """A client as a gateway makes one: bounded waits, one quick retry."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=5.0,
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
        **options,
    )


class Gateways:
    """Opens RedisRegistry instances on one redis-server (as many gateways would); closes their
    clients at teardown."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.clients: list[aioredis.Redis] = []

    def open(self, key: ClusterKey = KEY, timeout: float = 5.0, **options: Any) -> RedisRegistry:
        redis = client(self.server.url, **options)
        self.clients.append(redis)
        return RedisRegistry(redis, key, name=self.server.url, timeout=timeout)

    async def close(self) -> None:
        for redis in self.clients:
            await redis.aclose()


@pytest.fixture
async def gateways(redis_server: RedisServer) -> AsyncIterator[Gateways]:
    opened = Gateways(redis_server)
    yield opened
    await opened.close()


@pytest.fixture(params=["sqlite", "redis"])
async def registry(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyRegistry]:
    if request.param == "sqlite":
        sqlite = SqliteRegistry(tmp_path / "registry.sqlite3")
        yield sqlite
        await sqlite.close()
        return
    # (A sync fixture: an async one cannot be asked for from here.)
    gateways = Gateways(request.getfixturevalue("redis_server"))
    on_redis = gateways.open()
    yield on_redis
    await on_redis.close()
    await gateways.close()


def spec(name: str, namespace: str = DEFAULT_NAMESPACE, image: str = "img:1") -> FunctionSpec:
    return FunctionSpec(
        service=name,
        image=image,
        namespace=namespace,
        env_vars={"A": "1"},
        secrets=("s",),
        labels={"com.faasd-py.app": "shop"},
    )


def raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


async def within(awaitable: Awaitable[Any]) -> Any:
    async with asyncio.timeout(HANG):
        return await awaitable


# --- the contract, on both -------------------------------------------------------------------


async def test_a_function_reads_back_as_it_was_put(registry: AnyRegistry) -> None:
    assert await registry.get_function("f") is None
    await registry.put_function(spec("f"))
    stored = await registry.get_function("f")
    assert stored is not None
    assert stored.spec == spec("f")
    assert stored.created_at > 0
    assert stored.replicas is None


async def test_a_replace_keeps_the_creation_time_and_the_scaled_replicas(
    registry: AnyRegistry,
) -> None:
    await registry.put_function(spec("f"))
    before = await registry.get_function("f")
    assert await registry.set_replicas("f", 3)
    await asyncio.sleep(0.01)
    await registry.put_function(spec("f", image="img:2"))
    after = await registry.get_function("f")
    assert before is not None and after is not None
    assert after.spec.image == "img:2"
    assert after.created_at == before.created_at
    assert after.replicas == 3


async def test_a_function_deleted_and_put_again_starts_over(registry: AnyRegistry) -> None:
    await registry.put_function(spec("f"))
    await registry.set_replicas("f", 2)
    before = await registry.get_function("f")
    assert await registry.delete_function("f")
    assert await registry.get_function("f") is None
    assert not await registry.delete_function("f")
    await asyncio.sleep(0.01)
    await registry.put_function(spec("f"))
    after = await registry.get_function("f")
    assert before is not None and after is not None
    assert after.replicas is None
    assert after.created_at > before.created_at


async def test_replicas_of_an_absent_function_are_refused(registry: AnyRegistry) -> None:
    assert not await registry.set_replicas("nope", 2)
    assert await registry.get_function("nope") is None


async def test_functions_list_by_ref_and_by_namespace(registry: AnyRegistry) -> None:
    for name, namespace in [("b", DEFAULT_NAMESPACE), ("c", "dev"), ("a", DEFAULT_NAMESPACE)]:
        await registry.put_function(spec(name, namespace))
    assert [s.spec.ref for s in await registry.list_functions()] == ["a", "b", "c.dev"]
    assert [s.spec.ref for s in await registry.list_functions(DEFAULT_NAMESPACE)] == ["a", "b"]
    dev = await registry.list_functions("dev")
    assert [s.spec for s in dev] == [spec("c", "dev")]
    assert await registry.list_functions("other") == []
    stored = await registry.get_function("c.dev")
    assert stored is not None and stored.spec.namespace == "dev"


async def test_a_secret_is_created_once_and_replaced_only_when_it_exists(
    registry: AnyRegistry,
) -> None:
    value = bytes(range(256))  # any bytes, not only text
    assert await registry.get_secret(DEFAULT_NAMESPACE, "s") is None
    assert not await registry.put_secret(DEFAULT_NAMESPACE, "s", b"v", create=False)
    assert await registry.get_secret(DEFAULT_NAMESPACE, "s") is None
    assert await registry.put_secret(DEFAULT_NAMESPACE, "s", value, create=True)
    assert not await registry.put_secret(DEFAULT_NAMESPACE, "s", b"other", create=True)
    assert await registry.get_secret(DEFAULT_NAMESPACE, "s") == value
    assert await registry.put_secret(DEFAULT_NAMESPACE, "s", b"new", create=False)
    assert await registry.get_secret(DEFAULT_NAMESPACE, "s") == b"new"
    assert await registry.put_secret(DEFAULT_NAMESPACE, "empty", b"", create=True)
    assert await registry.get_secret(DEFAULT_NAMESPACE, "empty") == b""


async def test_secrets_list_by_name_within_their_namespace(registry: AnyRegistry) -> None:
    for name in ["b", "a", "c"]:
        await registry.put_secret(DEFAULT_NAMESPACE, name, name.encode(), create=True)
    await registry.put_secret("dev", "a", b"dev-a", create=True)
    assert await registry.list_secrets(DEFAULT_NAMESPACE) == ["a", "b", "c"]
    assert await registry.list_secrets("dev") == ["a"]
    assert await registry.list_secrets("other") == []
    assert await registry.get_secret("dev", "a") == b"dev-a"
    assert await registry.get_secret(DEFAULT_NAMESPACE, "a") == b"a"
    assert await registry.delete_secret(DEFAULT_NAMESPACE, "b")
    assert not await registry.delete_secret(DEFAULT_NAMESPACE, "b")
    assert await registry.list_secrets(DEFAULT_NAMESPACE) == ["a", "c"]
    assert await registry.get_secret("dev", "a") == b"dev-a"


async def test_the_default_namespace_always_exists(registry: AnyRegistry) -> None:
    assert await registry.get_namespace(DEFAULT_NAMESPACE) == Namespace(DEFAULT_NAMESPACE)
    assert await registry.list_namespaces() == [Namespace(DEFAULT_NAMESPACE)]
    assert not await registry.put_namespace(Namespace(DEFAULT_NAMESPACE), create=True)
    labelled = Namespace(DEFAULT_NAMESPACE, labels={"team": "a"}, annotations={"n": "1"})
    assert await registry.put_namespace(labelled, create=False)
    assert await registry.get_namespace(DEFAULT_NAMESPACE) == labelled
    assert await registry.list_namespaces() == [labelled]


async def test_a_namespace_is_created_once_and_replaced_only_when_it_exists(
    registry: AnyRegistry,
) -> None:
    dev = Namespace("dev", labels={"team": "a"}, annotations={"owner": "x"})
    assert await registry.get_namespace("dev") is None
    assert not await registry.put_namespace(dev, create=False)
    assert await registry.get_namespace("dev") is None
    assert await registry.put_namespace(dev, create=True)
    assert not await registry.put_namespace(Namespace("dev"), create=True)
    assert await registry.get_namespace("dev") == dev
    relabelled = Namespace("dev", labels={"team": "b"})
    assert await registry.put_namespace(relabelled, create=False)
    assert await registry.get_namespace("dev") == relabelled
    await registry.put_namespace(Namespace("beta"), create=True)
    names = [n.name for n in await registry.list_namespaces()]
    assert names == sorted(["beta", "dev", DEFAULT_NAMESPACE])


async def test_deleting_a_namespace_removes_its_secrets(registry: AnyRegistry) -> None:
    await registry.put_namespace(Namespace("dev"), create=True)
    await registry.put_secret("dev", "a", b"1", create=True)
    await registry.put_secret("dev", "b", b"2", create=True)
    await registry.put_secret(DEFAULT_NAMESPACE, "a", b"kept", create=True)
    assert await registry.delete_namespace("dev")
    assert await registry.get_namespace("dev") is None
    assert await registry.list_secrets("dev") == []
    assert await registry.get_secret("dev", "a") is None
    assert not await registry.delete_namespace("dev")
    assert await registry.put_namespace(Namespace("dev"), create=True)
    assert await registry.list_secrets("dev") == []  # a namespace made again starts empty
    assert await registry.get_secret(DEFAULT_NAMESPACE, "a") == b"kept"
    assert not await registry.delete_namespace("never")


async def test_policy_states_are_kept_per_app(registry: AnyRegistry) -> None:
    assert await registry.get_policy_states() == {}
    await registry.put_policy_state("shop", '{"v": 1}')
    await registry.put_policy_state("blog", '{"v": 2}')
    await registry.put_policy_state("shop", '{"v": 3}')
    assert await registry.get_policy_states() == {"shop": '{"v": 3}', "blog": '{"v": 2}'}


async def test_cache_statistics_are_kept_per_app(registry: AnyRegistry) -> None:
    assert await registry.get_cache_stats("shop") is None
    await registry.put_cache_stats("shop", '{"k": 1}')
    await registry.put_cache_stats("shop", '{"k": 2}')
    assert await registry.get_cache_stats("shop") == '{"k": 2}'
    assert await registry.get_cache_stats("blog") is None


# --- Redis only --------------------------------------------------------------------------------


async def test_redis_holds_secrets_only_sealed(gateways: Gateways, tmp_path: Path) -> None:
    registry = gateways.open()
    plaintexts = [b"correct horse battery staple", b"s3cr3t-p4ssw0rd-#42"]
    await registry.put_secret(DEFAULT_NAMESPACE, "one", plaintexts[0], create=True)
    await registry.put_secret("dev", "two", plaintexts[1], create=True)
    await registry.put_secret("dev", "two", plaintexts[1] + b"!", create=False)
    redis = gateways.clients[0]
    seen = bytearray()
    async for key in redis.scan_iter():
        seen += key + b"\n" + (await redis.dump(key) or b"")
        if await redis.type(key) == b"hash":
            for field, value in (await redis.hgetall(key)).items():
                seen += raw(field) + b"=" + raw(value) + b"\n"
    # And the data file Redis writes, uncompressed so that nothing hides in it.
    await redis.config_set("rdbcompression", "no")
    await redis.save()
    seen += (gateways.server.workdir / "dump.rdb").read_bytes()
    assert b"one" in seen and b"two" in seen  # the names are there, not the values
    for plaintext in plaintexts:
        assert plaintext[:12] not in seen
        assert base64.b64encode(plaintext)[:12] not in seen
    assert await registry.get_secret("dev", "two") == plaintexts[1] + b"!"


async def test_a_registry_with_another_cluster_key_says_the_key_does_not_match(
    gateways: Gateways,
) -> None:
    await gateways.open().put_secret(DEFAULT_NAMESPACE, "s", b"v", create=True)
    stranger = gateways.open(key=ClusterKey(secrets.token_bytes(32), "/etc/other.key"))
    with pytest.raises(ClusterKeyMismatch) as raised:
        await stranger.get_secret(DEFAULT_NAMESPACE, "s")
    assert "cluster key does not match" in raised.value.message
    assert "/etc/other.key" in raised.value.message


async def test_a_sealed_secret_moved_to_another_name_does_not_open(gateways: Gateways) -> None:
    registry = gateways.open()
    await registry.put_secret(DEFAULT_NAMESPACE, "a", b"v", create=True)
    await registry.put_secret(DEFAULT_NAMESPACE, "b", b"w", create=True)
    redis = gateways.clients[0]
    key = f"faasd:registry:secrets:{DEFAULT_NAMESPACE}"
    moved = await redis.hget(key, "a")
    assert moved is not None
    await redis.hset(key, "b", moved)
    with pytest.raises(ClusterKeyMismatch):
        await registry.get_secret(DEFAULT_NAMESPACE, "b")


def every_method(registry: RedisRegistry) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "put_function": lambda: registry.put_function(spec("f")),
        "get_function": lambda: registry.get_function("f"),
        "list_functions": lambda: registry.list_functions(),
        "delete_function": lambda: registry.delete_function("f"),
        "set_replicas": lambda: registry.set_replicas("f", 2),
        "put_secret": lambda: registry.put_secret("ns", "s", b"v", create=True),
        "get_secret": lambda: registry.get_secret("ns", "s"),
        "list_secrets": lambda: registry.list_secrets("ns"),
        "delete_secret": lambda: registry.delete_secret("ns", "s"),
        "get_namespace": lambda: registry.get_namespace("ns"),
        "list_namespaces": lambda: registry.list_namespaces(),
        "put_namespace": lambda: registry.put_namespace(Namespace("ns"), create=True),
        "put_default_namespace": lambda: registry.put_namespace(
            Namespace(DEFAULT_NAMESPACE), create=False
        ),
        "delete_namespace": lambda: registry.delete_namespace("ns"),
        "get_policy_states": lambda: registry.get_policy_states(),
        "put_policy_state": lambda: registry.put_policy_state("app", "{}"),
        "get_cache_stats": lambda: registry.get_cache_stats("app"),
        "put_cache_stats": lambda: registry.put_cache_stats("app", "{}"),
    }


async def test_every_method_gives_unavailable_naming_redis_when_it_is_down(
    gateways: Gateways,
) -> None:
    registry = gateways.open()
    await registry.put_function(spec("f"))  # connected once: it goes away under a client
    gateways.server.stop()
    for method, call in every_method(registry).items():
        with pytest.raises(Unavailable) as raised:
            await within(call())
        assert gateways.server.url in raised.value.message, method
        assert raised.value.status == 503


async def test_every_method_gives_unavailable_when_redis_does_not_answer() -> None:
    # A "Redis" that takes connections and never answers (a hung server, a black hole).
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    redis = client(url)
    registry = RedisRegistry(redis, KEY, name=url, timeout=0.3)
    try:
        for method, call in every_method(registry).items():
            with pytest.raises(Unavailable, match=r"no answer within 0\.3s") as raised:
                await within(call())
            assert url in raised.value.message, method
    finally:
        await redis.aclose()
        server.close()
        await server.wait_closed()


async def test_two_gateways_on_one_redis_see_each_others_writes(gateways: Gateways) -> None:
    first, second = gateways.open(), gateways.open()
    await first.put_function(spec("f", "dev"))
    await first.put_secret("dev", "s", b"v", create=True)
    await first.put_namespace(Namespace("dev", labels={"a": "b"}), create=True)
    await first.put_policy_state("shop", "{}")
    stored = await second.get_function("f.dev")
    assert stored is not None and stored.spec == spec("f", "dev")
    assert await second.get_secret("dev", "s") == b"v"
    assert await second.get_namespace("dev") == Namespace("dev", labels={"a": "b"})
    assert await second.get_policy_states() == {"shop": "{}"}
    assert not await second.put_secret("dev", "s", b"w", create=True)
    assert await second.set_replicas("f.dev", 4)
    assert await second.delete_namespace("dev")
    again = await first.get_function("f.dev")
    assert again is not None and again.replicas == 4
    assert await first.get_secret("dev", "s") is None
    assert await second.delete_function("f.dev")
    assert await first.list_functions() == []


async def test_concurrent_puts_from_many_gateways_keep_one_creation_time(
    gateways: Gateways,
) -> None:
    registries = [gateways.open() for _ in range(4)]
    # A function created by all at once: one creation time, whoever came first.
    await within(
        asyncio.gather(
            *(r.put_function(spec("g", image=f"img:{i}")) for i, r in enumerate(registries))
        )
    )
    stored = [await r.get_function("g") for r in registries]
    created = {s.created_at for s in stored if s is not None}
    assert len(created) == 1 and None not in stored
    # Replaced by all at once, many times: the creation time and replicas stay.
    await registries[0].set_replicas("g", 5)
    await within(
        asyncio.gather(
            *(registries[i % 4].put_function(spec("g", image=f"img:{i}")) for i in range(40))
        )
    )
    after = await registries[1].get_function("g")
    assert after is not None
    assert {after.created_at} == created
    assert after.replicas == 5


async def test_concurrent_creates_of_one_secret_let_exactly_one_win(gateways: Gateways) -> None:
    registries = [gateways.open() for _ in range(4)]
    results = await within(
        asyncio.gather(
            *(
                r.put_secret(DEFAULT_NAMESPACE, "s", f"v{i}".encode(), create=True)
                for i, r in enumerate(registries)
            )
        )
    )
    assert sorted(results) == [False, False, False, True]
    winner = results.index(True)
    assert await registries[0].get_secret(DEFAULT_NAMESPACE, "s") == f"v{winner}".encode()


async def test_every_change_is_published_once_and_nothing_else(gateways: Gateways) -> None:
    registry = gateways.open()
    listener = gateways.clients[0].pubsub()
    await listener.subscribe(CHANGES)
    assert (await within(listener.get_message(timeout=HANG)))["type"] == "subscribe"
    await registry.put_function(spec("f", "dev"))
    await registry.set_replicas("f.dev", 2)
    await registry.set_replicas("absent", 2)  # no change: no message
    await registry.delete_function("f.dev")
    await registry.delete_function("f.dev")  # no change
    await registry.put_secret("dev", "s", b"v", create=True)
    await registry.put_secret("dev", "s", b"v", create=True)  # no change
    await registry.put_secret("dev", "s", b"w", create=False)
    await registry.delete_secret("dev", "s")
    await registry.put_namespace(Namespace("dev"), create=True)
    await registry.put_namespace(Namespace("dev", labels={"a": "b"}), create=False)
    await registry.put_namespace(Namespace(DEFAULT_NAMESPACE, labels={"a": "b"}), create=False)
    await registry.delete_namespace("dev")
    await registry.delete_namespace("dev")  # no change
    await registry.put_policy_state("app", "{}")  # not a registry change
    await registry.put_function(spec("last"))
    expected = [
        ("function", "dev", "f"),
        ("function", "dev", "f"),
        ("function", "dev", "f"),
        ("secret", "dev", "s"),
        ("secret", "dev", "s"),
        ("secret", "dev", "s"),
        ("namespace", "dev", "dev"),
        ("namespace", "dev", "dev"),
        ("namespace", DEFAULT_NAMESPACE, DEFAULT_NAMESPACE),
        ("namespace", "dev", "dev"),
        ("function", DEFAULT_NAMESPACE, "last"),
    ]
    received: list[tuple[str, str, str]] = []
    while len(received) < len(expected):
        message = await within(listener.get_message(ignore_subscribe_messages=True, timeout=HANG))
        if message is not None:
            assert message["channel"] == CHANGES.encode()
            body = json.loads(message["data"])
            received.append((body["kind"], body["namespace"], body["name"]))
    assert received == expected
    await listener.aclose()


async def test_a_client_that_decodes_responses_reads_the_same(gateways: Gateways) -> None:
    writer, reader = gateways.open(), gateways.open(decode_responses=True)
    await writer.put_function(spec("f"))
    await writer.set_replicas("f", 2)
    await writer.put_secret(DEFAULT_NAMESPACE, "s", b"\x00\xff", create=True)
    await writer.put_namespace(Namespace("dev", labels={"a": "b"}), create=True)
    await writer.put_policy_state("app", "{}")
    stored = await reader.get_function("f")
    assert stored is not None and stored.spec == spec("f") and stored.replicas == 2
    assert [s.spec.ref for s in await reader.list_functions()] == ["f"]
    assert await reader.get_secret(DEFAULT_NAMESPACE, "s") == b"\x00\xff"
    assert await reader.list_secrets(DEFAULT_NAMESPACE) == ["s"]
    assert await reader.get_namespace("dev") == Namespace("dev", labels={"a": "b"})
    assert await reader.get_policy_states() == {"app": "{}"}
