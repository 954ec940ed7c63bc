"""`faasd-py build --push`: the built package lands in the cluster's Redis, by digest."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import redis

from faasd_py.cluster._packages import BLOB_PREFIX, IMAGES, fetch_package
from faasd_py.packages import PackageStore
from tests.e2e.conftest import Cli
from tests.integration._redis import RedisServer, redis_server

__all__ = ["redis_server"]

HANDLER = 'def handle(event, context):\n    return "pushed"\n'


def write_stack(folder: Path) -> None:
    (folder / "pushme").mkdir()
    (folder / "pushme" / "handler.py").write_text(HANDLER)
    (folder / "stack.yml").write_text(
        textwrap.dedent(
            """\
            version: 1.0
            provider:
              name: openfaas
            functions:
              pushme:
                lang: python3-http
                handler: ./pushme
                image: pushme:0.1
            """
        )
    )


def test_build_push_sends_the_package_to_the_cluster(
    offline_cli: Cli, redis_server: RedisServer, tmp_path: Path
) -> None:
    write_stack(offline_cli.cwd)
    done = offline_cli("build", "-f", "stack.yml", "--push", "--cluster", redis_server.url)
    assert done.returncode == 0, done.stderr
    inspect = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        digest = inspect.hget(IMAGES, "pushme:0.1")
        assert isinstance(digest, str)
        assert f"Pushed pushme:0.1 {digest}" in done.stdout
        assert inspect.llen(BLOB_PREFIX + digest) >= 1

        # FAASD_CLUSTER serves as --cluster; a new build (a new build time) is a new digest.
        again = offline_cli("build", "--push", env={"FAASD_CLUSTER": redis_server.url})
        assert again.returncode == 0, again.stderr
        latest = inspect.hget(IMAGES, "pushme:0.1")
        assert isinstance(latest, str) and latest != digest
        assert f"Pushed pushme:0.1 {latest}" in again.stdout
    finally:
        inspect.close()

    # What a worker fetches is what was built.
    async def fetch() -> str:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_server.url)
        try:
            package = await fetch_package(client, "pushme:0.1", PackageStore(tmp_path / "w"))
        finally:
            await client.aclose()
        return (package.function_dir / "handler.py").read_text()

    assert asyncio.run(fetch()) == HANDLER


def test_push_without_a_cluster_is_a_usage_error(offline_cli: Cli) -> None:
    write_stack(offline_cli.cwd)
    done = offline_cli("build", "--push")
    assert done.returncode == 2
    assert "--push needs the cluster's Redis" in done.stderr
    assert "--cluster" in done.stderr and "FAASD_CLUSTER" in done.stderr
    # Refused before anything was built.
    assert not (offline_cli.cwd / "packages").exists()


def test_push_to_a_cluster_that_is_down_says_so(offline_cli: Cli) -> None:
    write_stack(offline_cli.cwd)
    url = "redis://127.0.0.1:9/0"
    done = offline_cli("build", "--push", "--cluster", url)
    assert done.returncode == 1
    assert "cluster package store redis://127.0.0.1:9/0 unavailable" in done.stderr
