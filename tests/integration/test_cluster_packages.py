"""Packages through a real Redis: push, fetch into another store, and every way a fetch must
refuse what it was sent (a tampered blob, hostile archives, an unknown image, Redis down)."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import io
import os
import re
import stat
import tarfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from faasd_py.cluster._packages import (
    BLOB_PREFIX,
    DIGEST_FILE,
    GRACE_SECONDS,
    IMAGES,
    PackageRejected,
    cluster_images,
    fetch_package,
    package_digest,
    push_package,
)
from faasd_py.errors import NotFound, Unavailable
from faasd_py.packages import Package, PackageStore
from faasd_py.spec import FunctionSpec, StackFunction
from tests.integration._redis import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, used by `server`

HANDLER = 'def handle(event, context):\n    return {"statusCode": 200, "body": "hi from %s"}\n'
SMALL_CHUNK = 64 * 1024


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    return redis_server


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(server.url)
    yield connection
    await connection.aclose()


@pytest.fixture
def inspect(server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client for looking at what the package store wrote."""
    connection = redis.Redis.from_url(server.url)
    yield connection
    connection.close()


Build = Callable[..., Package]


@pytest.fixture
def build(tmp_path: Path) -> Build:
    """Builds a tiny function (with a nested module, an executable file, links inside it)."""

    def make(
        store: PackageStore, image: str = "hello", tag: str = "v1", extra: bytes = b""
    ) -> Package:
        source = tmp_path / "src" / image.replace(":", "_") / tag
        (source / "lib").mkdir(parents=True, exist_ok=True)
        (source / "handler.py").write_text(HANDLER % tag)
        (source / "lib" / "__init__.py").write_text("VALUE = 1\n")
        (source / "run.sh").write_text("#!/bin/sh\n")
        (source / "run.sh").chmod(0o755)
        if extra:
            (source / "blob.bin").write_bytes(extra)
        fn = StackFunction(FunctionSpec(service="hello", image=image), "python3-http", source)
        package = store.build(fn)
        # Links as pip leaves them in deps/ sometimes: relative, within the package.
        (package.deps_dir / "pkg").mkdir()
        (package.deps_dir / "pkg" / "real.py").write_text("X = 2\n")
        (package.deps_dir / "pkg" / "alias.py").symlink_to("real.py")
        (package.deps_dir / "handler-link.py").symlink_to("../function/handler.py")
        (package.deps_dir / "dangling").symlink_to("pkg/missing")
        return package

    return make


def tree(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every entry under root: its kind, mode and content (or link target)."""
    found: dict[str, tuple[str, int, bytes]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            rel = str(path.relative_to(root))
            if rel == DIGEST_FILE:
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", 0, os.readlink(path).encode())
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode), b"")
            else:
                found[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return found


def run_handler(package: Package) -> Any:
    spec = importlib.util.spec_from_file_location(
        "fetched_handler", package.function_dir / "handler.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handle(None, None)


def command_calls(inspect: redis.Redis, command: str) -> int:
    stats = inspect.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if entry else 0


def leftovers(store: PackageStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir()) if store.root.exists() else []


async def test_push_then_fetch_gives_the_same_tree(
    client: aioredis.Redis, build: Build, tmp_path: Path
) -> None:
    package = build(PackageStore(tmp_path / "builder"))
    digest = await push_package(client, package)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert await package_digest(client, "hello") == digest
    assert await cluster_images(client) == {"hello:latest": digest}

    worker = PackageStore(tmp_path / "worker")
    fetched = await fetch_package(client, "hello:latest", worker)

    assert fetched.root == worker.path_of("hello")
    assert tree(fetched.root) == tree(package.root)
    assert Package.at(fetched.root) == fetched
    assert worker.get("hello") == fetched
    assert fetched.image == "hello:latest" and fetched.built_at == package.built_at
    assert (fetched.deps_dir / "pkg" / "alias.py").read_text() == "X = 2\n"
    assert run_handler(fetched) == {"statusCode": 200, "body": "hi from v1"}
    assert stat.S_IMODE(fetched.root.stat().st_mode) == 0o700
    assert [p for p in leftovers(worker) if p.startswith(".")] == []
    # Pushing what was fetched is pushing the same content.
    assert await push_package(client, fetched) == digest


async def test_the_digest_is_stable_and_a_second_push_uploads_nothing(
    client: aioredis.Redis, inspect: redis.Redis, build: Build, tmp_path: Path
) -> None:
    package = build(PackageStore(tmp_path / "builder"))
    first = await push_package(client, package)
    uploads = command_calls(inspect, "rpush")
    assert uploads > 0
    assert await push_package(client, package) == first
    assert command_calls(inspect, "rpush") == uploads
    assert inspect.ttl(BLOB_PREFIX + first) == -1  # kept for good while an image points at it


async def test_a_second_fetch_is_served_from_the_local_store(
    client: aioredis.Redis, inspect: redis.Redis, build: Build, tmp_path: Path
) -> None:
    digest = await push_package(client, build(PackageStore(tmp_path / "builder")))
    worker = PackageStore(tmp_path / "worker")
    first = await fetch_package(client, "hello", worker)
    reads = command_calls(inspect, "lindex")
    # With the blob gone, only a fetch that downloads nothing can succeed.
    inspect.delete(BLOB_PREFIX + digest)
    again = await fetch_package(client, "hello", worker)
    assert again == first
    assert command_calls(inspect, "lindex") == reads


async def test_a_new_push_replaces_the_local_package_and_retires_the_old_blob(
    client: aioredis.Redis, inspect: redis.Redis, build: Build, tmp_path: Path
) -> None:
    old_store, new_store = PackageStore(tmp_path / "a"), PackageStore(tmp_path / "b")
    old = await push_package(client, build(old_store, tag="v1"))
    worker = PackageStore(tmp_path / "worker")
    assert run_handler(await fetch_package(client, "hello", worker))["body"] == "hi from v1"

    new = await push_package(client, build(new_store, tag="v2"))
    assert new != old
    assert await package_digest(client, "hello") == new
    assert 0 < inspect.ttl(BLOB_PREFIX + old) <= GRACE_SECONDS  # a grace for fetches under way
    assert run_handler(await fetch_package(client, "hello", worker))["body"] == "hi from v2"

    # The old content again: its blob is kept for good once more, the other retires.
    old_package = old_store.get("hello")
    assert old_package is not None
    assert await push_package(client, old_package) == old
    assert inspect.ttl(BLOB_PREFIX + old) == -1
    assert 0 < inspect.ttl(BLOB_PREFIX + new) <= GRACE_SECONDS


async def test_a_package_of_many_chunks_round_trips(
    client: aioredis.Redis, inspect: redis.Redis, build: Build, tmp_path: Path
) -> None:
    payload = os.urandom(5 * SMALL_CHUNK + 123)  # random: compression cannot shrink it
    package = build(PackageStore(tmp_path / "builder"), extra=payload)
    digest = await push_package(client, package, chunk=SMALL_CHUNK)
    chunks = [c for c in inspect.lrange(BLOB_PREFIX + digest, 0, -1) if isinstance(c, bytes)]
    assert len(chunks) > 5
    assert all(len(chunk) <= SMALL_CHUNK for chunk in chunks)
    assert "sha256:" + hashlib.sha256(b"".join(chunks)).hexdigest() == digest

    fetched = await fetch_package(client, "hello", PackageStore(tmp_path / "worker"))
    assert (fetched.function_dir / "blob.bin").read_bytes() == payload
    assert tree(fetched.root) == tree(package.root)


async def test_concurrent_fetches_download_once(
    client: aioredis.Redis, inspect: redis.Redis, build: Build, tmp_path: Path
) -> None:
    package = build(PackageStore(tmp_path / "builder"), extra=os.urandom(3 * SMALL_CHUNK))
    digest = await push_package(client, package, chunk=SMALL_CHUNK)
    chunks = inspect.llen(BLOB_PREFIX + digest)
    before = command_calls(inspect, "lindex")
    worker = PackageStore(tmp_path / "worker")
    fetched = await asyncio.gather(*(fetch_package(client, "hello", worker) for _ in range(5)))
    assert len({p.root for p in fetched}) == 1
    assert command_calls(inspect, "lindex") - before == chunks


async def test_a_tampered_blob_is_refused_and_nothing_installed(
    client: aioredis.Redis, inspect: redis.Redis, build: Build, tmp_path: Path
) -> None:
    digest = await push_package(client, build(PackageStore(tmp_path / "builder")))
    chunk = inspect.lindex(BLOB_PREFIX + digest, 0)
    assert isinstance(chunk, bytes)
    tampered = chunk[:-1] + bytes([chunk[-1] ^ 1])
    inspect.lset(BLOB_PREFIX + digest, 0, tampered)  # type: ignore[arg-type]  # bytes are fine
    worker = PackageStore(tmp_path / "worker")
    with pytest.raises(PackageRejected, match=r"corrupt.*nothing was installed"):
        await fetch_package(client, "hello", worker)
    assert worker.get("hello") is None
    assert leftovers(worker) == []


def hostile_archive(entries: list[tuple[str, str, str]]) -> bytes:
    """A plain tar of (kind, name, link target) entries; files hold a few bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for kind, name, target in entries:
            info = tarfile.TarInfo(name)
            info.type = {
                "dir": tarfile.DIRTYPE,
                "file": tarfile.REGTYPE,
                "link": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "device": tarfile.CHRTYPE,
            }[kind]
            info.linkname = target
            data = b"evil\n" if kind == "file" else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


PACKAGE = [
    ("dir", "function", ""),
    ("file", "function/handler.py", ""),
    ("dir", "deps", ""),
]


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ([*PACKAGE, ("file", "../escaped", "")], "not a plain relative path"),
        ([*PACKAGE, ("file", "/tmp/absolute", "")], "not a plain relative path"),
        ([*PACKAGE, ("file", "deps/../../escaped", "")], "not a plain relative path"),
        ([*PACKAGE, ("link", "deps/out", "../../outside")], "leaves the package"),
        ([*PACKAGE, ("link", "deps/abs", "/etc/passwd")], "leaves the package"),
        # Each link stays inside as written; followed on disk, the pair leaves it.
        (
            [*PACKAGE, ("link", "deps/up", ".."), ("link", "deps/out", "up/../..")],
            "resolves outside",
        ),
        ([*PACKAGE, ("link", "deps/l", "."), ("file", "deps/l/x", "")], "not below a folder"),
        ([*PACKAGE, ("hard", "deps/h", "function/handler.py")], "neither a file"),
        ([*PACKAGE, ("device", "deps/tty", "")], "neither a file"),
        ([*PACKAGE, ("file", "function/handler.py", "")], "appears twice"),
        ([*PACKAGE, ("file", DIGEST_FILE, "")], DIGEST_FILE),
    ],
    ids=[
        "dotdot",
        "absolute",
        "inner-dotdot",
        "link-out",
        "link-absolute",
        "link-chain",
        "through-link",
        "hardlink",
        "device",
        "duplicate",
        "digest-file",
    ],
)
async def test_hostile_archives_are_refused(
    client: aioredis.Redis,
    inspect: redis.Redis,
    tmp_path: Path,
    entries: list[tuple[str, str, str]],
    reason: str,
) -> None:
    archive = hostile_archive(entries)
    digest = "sha256:" + hashlib.sha256(archive).hexdigest()
    inspect.rpush(BLOB_PREFIX + digest, archive)
    inspect.hset(IMAGES, "evil:latest", digest)
    worker = PackageStore(tmp_path / "store" / "packages")
    with pytest.raises(PackageRejected, match=reason) as caught:
        await fetch_package(client, "evil", worker)
    assert "nothing was installed" in caught.value.message
    assert worker.get("evil") is None
    assert leftovers(worker) == []
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["packages"]


async def test_an_archive_without_a_package_is_refused(
    client: aioredis.Redis, inspect: redis.Redis, tmp_path: Path
) -> None:
    archive = hostile_archive(PACKAGE)  # no package.json
    digest = "sha256:" + hashlib.sha256(archive).hexdigest()
    inspect.rpush(BLOB_PREFIX + digest, archive)
    inspect.hset(IMAGES, "empty:latest", digest)
    worker = PackageStore(tmp_path / "worker")
    with pytest.raises(PackageRejected, match="holds no package"):
        await fetch_package(client, "empty", worker)
    assert leftovers(worker) == []


async def test_an_unknown_image_says_to_push_it(client: aioredis.Redis, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"nothere:latest.*faasd-py build --push"):
        await fetch_package(client, "nothere", PackageStore(tmp_path / "worker"))
    assert await package_digest(client, "nothere") is None


async def test_redis_down_is_unavailable(
    client: aioredis.Redis, server: RedisServer, build: Build, tmp_path: Path
) -> None:
    package = build(PackageStore(tmp_path / "builder"))
    server.stop()
    where = re.escape(f"cluster package store redis://127.0.0.1:{server.port}/0")
    with pytest.raises(Unavailable, match=where):
        await push_package(client, package)
    with pytest.raises(Unavailable, match=where):
        await fetch_package(client, "hello", PackageStore(tmp_path / "worker"))
    with pytest.raises(Unavailable, match=where):
        await cluster_images(client)


async def test_a_package_with_a_link_out_of_it_is_not_pushed(
    client: aioredis.Redis, build: Build, tmp_path: Path
) -> None:
    package = build(PackageStore(tmp_path / "builder"))
    (package.deps_dir / "out").symlink_to("../../../outside")
    with pytest.raises(PackageRejected, match=r"deps/out -> \.\./\.\./\.\./outside"):
        await push_package(client, package)
    assert await cluster_images(client) == {}
