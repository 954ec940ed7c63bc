"""The dashboard's routes on a real gateway: its page, the series route (auth, unknown
functions, what it holds after real invocations), the live events and the package list."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from faasd_py.ui._sampler import CAPACITY
from tests.integration.conftest import HELLO, Platform

DEADLINE = 60.0  # seconds: only catches hangs


async def test_the_page_needs_no_credentials_and_allows_no_other_host(platform: Platform) -> None:
    async with platform.session.get(platform.url + "/ui") as response:
        assert response.status == 200 and response.url.path == "/ui/"
        page = await response.text()
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    script = page.split('src="', 1)[1].split('"', 1)[0]
    assert script.startswith("/ui/assets/") and script.endswith(".js")
    async with platform.session.get(platform.url + script) as response:
        assert response.status == 200
        assert response.content_type == "text/javascript"
        assert "immutable" in response.headers["Cache-Control"]
    async with platform.session.get(platform.url + "/ui/assets/nothing.js") as response:
        assert response.status == 404


async def test_the_series_route_needs_the_gateways_credentials(platform: Platform) -> None:
    for path in ("/system/dashboard/series", "/system/dashboard/series?name=x"):
        status, body = await platform.system("GET", path, auth=False)
        assert status == 401, body
    wrong = {"Authorization": "Basic YWRtaW46bm9wZQ=="}  # admin:nope
    url = platform.url + "/system/dashboard/series"
    async with platform.session.get(url, headers=wrong) as response:
        assert response.status == 401


async def test_an_unknown_function_has_no_series(platform: Platform) -> None:
    status, body = await platform.system("GET", "/system/dashboard/series?name=nobody")
    assert status == 404 and "nobody" in body["error"]
    status, body = await platform.system("GET", "/system/dashboard/series?name=Not%20A%20Name")
    assert status == 400, body


async def test_invocations_show_in_the_functions_series_and_row(platform: Platform) -> None:
    await platform.deploy("dash", HELLO)
    for _ in range(5):
        status, _, _ = await platform.invoke("dash", b"x")
        assert status == 200
    series = await _until(
        platform,
        "/system/dashboard/series?name=dash",
        lambda s: sum(v or 0 for v in s["function"]["rate"]) > 0,
    )
    assert len(series["t"]) == len(series["function"]["rate"]) <= CAPACITY
    assert any(v is not None for v in series["function"]["p50"])
    assert series["app"]["name"] == "dash"
    whole = await _until(
        platform,
        "/system/dashboard/series",
        lambda s: any(r["ref"] == "dash" and r["invocations"] >= 5 for r in s["rows"]),
    )
    assert len(whole["gateway"]["rate"]) == len(whole["t"])


async def test_the_events_stream_ticks_to_a_client_that_asks_for_it(platform: Platform) -> None:
    url = platform.url + "/system/dashboard/events"
    async with platform.session.get(url, headers=platform.auth) as response:
        assert response.status == 406  # not asked for text/event-stream
    headers = {**platform.auth, "Accept": "text/event-stream"}
    async with platform.session.get(url, headers=headers) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        kinds: list[str] = []
        data: list[Any] = []
        async with asyncio.timeout(DEADLINE):
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kinds.append(line[7:])
                elif line.startswith("data: "):
                    data.append(json.loads(line[6:]))
                if kinds.count("tick") >= 2:
                    break
    assert kinds[0] == "rows"
    assert {"t", "gateway", "rows", "apps", "removed"} <= set(data[-1])


async def test_the_package_list_names_what_the_store_holds(platform: Platform) -> None:
    platform.build("listed:latest", HELLO)
    status, packages = await platform.system("GET", "/system/dashboard/packages")
    assert status == 200
    assert "listed:latest" in [p["image"] for p in packages]


async def _until(platform: Platform, path: str, ready: Any) -> dict[str, Any]:
    """The route's answer once `ready(answer)`: the sampler ticks once a second."""
    deadline = time.monotonic() + DEADLINE
    while True:
        status, body = await platform.system("GET", path)
        assert status == 200, body
        if ready(body):
            return dict(body)
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.5)
