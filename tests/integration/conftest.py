"""A real gateway on a free port, with a real worker and real instance processes."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import textwrap
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy
from rich.console import Console

from faasd_py import server
from faasd_py.config import Config
from faasd_py.packages import PackageStore
from faasd_py.spec import FunctionSpec, Resources, StackFunction
from faasd_py.worker import Worker
from tests.integration._redis import free_port


@dataclass
class Platform:
    """A running faasd-py (server.start) and a client session for it."""

    running: server.Platform
    session: aiohttp.ClientSession
    tmp: Path

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def config(self) -> Config:
        return self.running.config

    @property
    def worker(self) -> Worker:
        return self.running.worker

    @property
    def auth(self) -> dict[str, str]:
        credentials = self.running.credentials
        return {"Authorization": basic_auth(credentials.user, credentials.password)}

    def build(self, image: str, source: str, requirements: str = "") -> None:
        """Write a handler and build it into the package store as `image`."""
        handler_dir = self.tmp / "src" / image.replace(":", "_")
        handler_dir.mkdir(parents=True, exist_ok=True)
        (handler_dir / "handler.py").write_text(textwrap.dedent(source))
        (handler_dir / "requirements.txt").write_text(requirements)
        spec = FunctionSpec(service="build", image=image)
        PackageStore(self.config.packages_dir).build(
            StackFunction(spec=spec, lang="python3-http", handler=handler_dir)
        )

    async def deploy(
        self,
        name: str,
        source: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        memory: str | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        """Build (when given a source) and deploy as the OpenFaaS CLI does: PUT, then POST."""
        image = f"{name}:latest"
        if source is not None:
            self.build(image, source)
        spec = FunctionSpec(
            service=name,
            image=image,
            labels=dict(labels or {}),
            env_vars=dict(env or {}),
            limits=Resources(memory=memory),
            secrets=secrets,
        )
        status = await self.system("PUT", "/system/functions", spec.to_json())
        if status[0] == 404:
            status = await self.system("POST", "/system/functions", spec.to_json())
        assert status[0] == 202, status

    async def system(
        self, method: str, path: str, body: Any = None, *, auth: bool = True
    ) -> tuple[int, Any]:
        """A /system call; returns (status, decoded JSON body or text or None)."""
        async with self.session.request(
            method,
            self.url + path,
            data=None if body is None else json.dumps(body),
            headers=self.auth if auth else None,
        ) as response:
            return response.status, await json_or_text(response)

    async def invoke(
        self, name: str, body: bytes = b"", *, method: str = "POST", path: str = "", **kwargs: Any
    ) -> tuple[int, bytes, Mapping[str, str]]:
        url = f"{self.url}/function/{name}{path}"
        async with self.session.request(method, url, data=body, **kwargs) as response:
            return response.status, await response.read(), response.headers

    async def metric(self, series: str) -> float | None:
        """One sample of /metrics, named with its labels as the text shows it, or None."""
        async with self.session.get(f"{self.url}/metrics", headers=self.auth) as response:
            assert response.status == 200
            for line in (await response.text()).splitlines():
                name, _, value = line.rpartition(" ")
                if name == series:
                    return float(value)
        return None

    async def logs(self, name: str, query: str = "") -> list[dict[str, Any]]:
        status, text = await self.system("GET", f"/system/logs?name={name}{query}")
        assert status == 200, text
        if isinstance(text, dict):  # a single line decodes as one JSON object
            return [text]
        return [json.loads(line) for line in (text or "").splitlines()]


async def json_or_text(response: aiohttp.ClientResponse) -> Any:
    """A response's body: decoded JSON, else its text, None when empty."""
    text = await response.text()
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return text


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def start_platform(tmp_path: Path, **overrides: Any) -> Platform:
    config = replace(
        Config(data_dir=tmp_path / "data", port=0, scale_down_after=60.0, shutdown_timeout=5),
        **{**private_network(), **overrides},
    )
    running = await server.start(config, Console(file=io.StringIO()))
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    return Platform(running=running, session=session, tmp=tmp_path)


def private_network() -> dict[str, str]:
    """A bridge and subnet of its own for each platform: tests (and a real `up`) may run side
    by side on one host, and one worker's bridge is not another's to take."""
    rng = random.Random()
    return {
        "net_bridge": f"fdt{rng.getrandbits(40):010x}",
        "net_subnet": f"10.{rng.randrange(100, 200)}.{rng.randrange(256)}.0/24",
    }


async def stop_platform(platform: Platform) -> None:
    await platform.session.close()
    await server.stop(platform.running)


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    running = await start_platform(tmp_path)
    try:
        yield running
    finally:
        await stop_platform(running)


HELLO = """
def handle(event, context):
    return {"statusCode": 200, "body": "hello " + event.body.decode()}
"""


# --- a callback receiver (async invocations) ----------------------------------------------------

CALLBACK_WAIT = 30.0  # only catches a callback that never comes


@dataclass
class Callback:
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass
class Receiver:
    """A callback receiver: every POST it gets, in order of arrival."""

    url: str
    received: asyncio.Queue[Callback] = field(default_factory=asyncio.Queue)

    async def next(self) -> Callback:
        async with asyncio.timeout(CALLBACK_WAIT):
            return await self.received.get()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver("")

    async def record(request: web.Request) -> web.Response:
        await found.received.put(Callback(request.path, request.headers, await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    found.url = f"http://127.0.0.1:{port}"
    try:
        yield found
    finally:
        await runner.cleanup()
