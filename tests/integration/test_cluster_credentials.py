"""Joining a cluster on a real redis-server: the cluster key (made by the first gateway,
checked for every other host) and the credentials every gateway shares."""

from __future__ import annotations

import asyncio
import logging
import secrets
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from faasd_py.cluster._credentials import CREDENTIALS_KEY, cluster_credentials
from faasd_py.cluster._keys import (
    CLUSTER_KEY_ENV,
    KEY_CHECK,
    ClusterKey,
    ClusterKeyError,
    ClusterKeyMismatch,
    join_cluster_key,
)
from faasd_py.errors import Unavailable
from faasd_py.gateway import load_or_create_credentials
from tests.integration._redis import RedisServer, redis_server

__all__ = ["redis_server"]  # a fixture, used by name

HANG = 30.0  # deadlines only catch hangs


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(
        redis_server.url,
        socket_connect_timeout=1.0,
        socket_timeout=5.0,
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
    )
    yield client
    await client.aclose()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_first_gateway_makes_the_key_and_others_must_share_it(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    first = tmp_path / "gw1" / "cluster.key"
    key = await join_cluster_key(redis, first, create=True)
    assert mode(first) == 0o600
    assert await redis.get(KEY_CHECK) == key.check_value().encode()
    # A second gateway with a copy of the key joins; so does a worker.
    copy = tmp_path / "gw2" / "cluster.key"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    copy.chmod(0o600)
    joined = await join_cluster_key(redis, copy, create=True)
    assert joined.check_value() == key.check_value()
    assert (await join_cluster_key(redis, copy, create=False)).check_value() == key.check_value()


async def test_a_gateway_without_the_key_is_told_to_copy_it_not_given_a_new_one(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    await join_cluster_key(redis, tmp_path / "gw1" / "cluster.key", create=True)
    second = tmp_path / "gw2" / "cluster.key"
    with pytest.raises(ClusterKeyError, match="first gateway's --data-dir"):
        await join_cluster_key(redis, second, create=True)
    assert not second.exists()


async def test_a_worker_never_makes_a_key(redis: aioredis.Redis, tmp_path: Path) -> None:
    path = tmp_path / "worker" / "cluster.key"
    with pytest.raises(ClusterKeyError, match="first gateway's --data-dir"):
        await join_cluster_key(redis, path, create=False)
    assert not path.exists()
    assert await redis.get(KEY_CHECK) is None


async def test_a_host_with_another_key_is_refused_naming_its_key_file(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    await join_cluster_key(redis, tmp_path / "gw1" / "cluster.key", create=True)
    stranger = tmp_path / "gw2" / "cluster.key"
    ClusterKey.create(stranger)
    for create in (True, False):
        with pytest.raises(ClusterKeyMismatch) as raised:
            await join_cluster_key(redis, stranger, create=create)
        assert str(stranger) in raised.value.message
        assert f"chmod 600 {stranger}" in raised.value.message
    assert stranger.exists()  # a key the host had is never removed


async def test_a_key_in_the_variable_joins_and_one_that_differs_is_refused(
    redis: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await join_cluster_key(redis, tmp_path / "gw1" / "cluster.key", create=True)
    missing = tmp_path / "gw2" / "cluster.key"
    monkeypatch.setenv(CLUSTER_KEY_ENV, (tmp_path / "gw1" / "cluster.key").read_text().strip())
    joined = await join_cluster_key(redis, missing, create=True)
    assert joined.check_value() == key.check_value()
    assert not missing.exists()  # the variable stands for the file
    monkeypatch.setenv(CLUSTER_KEY_ENV, secrets.token_hex(32))
    with pytest.raises(ClusterKeyMismatch, match=f"unset {CLUSTER_KEY_ENV}"):
        await join_cluster_key(redis, missing, create=True)


async def test_first_gateways_starting_together_agree_on_one_key(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    paths = [tmp_path / f"gw{i}" / "cluster.key" for i in range(4)]
    results = await asyncio.wait_for(
        asyncio.gather(
            *(join_cluster_key(redis, path, create=True) for path in paths),
            return_exceptions=True,
        ),
        HANG,
    )
    joined = [r for r in results if isinstance(r, ClusterKey)]
    assert joined, results
    stored = await redis.get(KEY_CHECK)
    assert stored is not None
    assert {k.check_value().encode() for k in joined} == {stored}
    for path, result in zip(paths, results, strict=True):
        if isinstance(result, ClusterKey):
            assert path.exists()
        else:
            # Lost the race (its key is not the cluster's), or came after the winner had stored
            # its check (no key here): either way told to copy the winner's, and left no key.
            assert isinstance(result, ClusterKeyError), result
            assert not path.exists()


async def test_gateways_share_the_credentials_the_first_one_made(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    key = ClusterKey(secrets.token_bytes(32))
    first_dir, second_dir = tmp_path / "gw1" / "credentials", tmp_path / "gw2" / "credentials"
    first, created = await cluster_credentials(redis, key, first_dir)
    assert created and first.user == "admin" and len(first.password) >= 24
    second, created = await cluster_credentials(redis, key, second_dir)
    assert not created and second == first
    for directory in (first_dir, second_dir):
        # Where `up` keeps them, so the CLI on each host reads them as it always has.
        assert load_or_create_credentials(directory) == (first, False)
        assert mode(directory) == 0o700
        assert {mode(f) for f in directory.iterdir()} == {0o600}
    # Redis holds them sealed only.
    stored = await redis.get(CREDENTIALS_KEY)
    assert stored is not None and first.password.encode() not in stored


async def test_the_cluster_credentials_win_over_a_gateways_own(
    redis: aioredis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = ClusterKey(secrets.token_bytes(32))
    cluster, _ = await cluster_credentials(redis, key, tmp_path / "gw1")
    own, _ = load_or_create_credentials(tmp_path / "gw2")  # it ran `up` before
    assert own != cluster
    with caplog.at_level(logging.WARNING, logger="faasd_py.cluster._credentials"):
        credentials, created = await cluster_credentials(redis, key, tmp_path / "gw2")
    assert credentials == cluster and not created
    assert load_or_create_credentials(tmp_path / "gw2") == (cluster, False)
    assert "differ from the cluster's" in caplog.text


async def test_the_first_gateway_offers_the_credentials_it_had(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    key = ClusterKey(secrets.token_bytes(32))
    own, _ = load_or_create_credentials(tmp_path / "gw1")
    credentials, created = await cluster_credentials(redis, key, tmp_path / "gw1")
    assert created and credentials == own


async def test_gateways_starting_together_agree_on_one_set_of_credentials(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    key = ClusterKey(secrets.token_bytes(32))
    results = await asyncio.wait_for(
        asyncio.gather(*(cluster_credentials(redis, key, tmp_path / f"gw{i}") for i in range(4))),
        HANG,
    )
    assert len({credentials for credentials, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]


async def test_credentials_sealed_with_another_key_are_refused(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    await cluster_credentials(redis, ClusterKey(secrets.token_bytes(32)), tmp_path / "gw1")
    stranger = ClusterKey(secrets.token_bytes(32), "/etc/other.key")
    with pytest.raises(ClusterKeyMismatch, match="cluster key does not match"):
        await cluster_credentials(redis, stranger, tmp_path / "gw2")
    assert not (tmp_path / "gw2").exists()


async def test_redis_down_gives_unavailable_naming_it(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    redis_server.stop()
    key = ClusterKey(secrets.token_bytes(32))
    for attempt in (
        join_cluster_key(redis, tmp_path / "cluster.key", create=True),
        cluster_credentials(redis, key, tmp_path / "credentials"),
    ):
        with pytest.raises(Unavailable) as raised:
            await asyncio.wait_for(attempt, HANG)
        assert f"127.0.0.1:{redis_server.port}" in raised.value.message
    assert not (tmp_path / "cluster.key").exists()
