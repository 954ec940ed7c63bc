"""The keep-alive policy live in the worker, with time compressed (--bin-width 100ms: the
hybrid range is 24 s), real instances and zygotes. Margins are generous: a shared 2-core
machine may be slow to start a zygote, so counts are bounded, not exact, where timing decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from faasd_py.spec import FunctionSpec
from faasd_py.worker import PoolStatistics
from tests.integration.conftest import HELLO, Platform, start_platform, stop_platform

BIN = 0.1
POLICY = "com.faasd-py.policy"


async def deploy(
    platform: Platform,
    name: str,
    *,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> tuple[int, object]:
    image = f"{name}:latest"
    platform.build(image, HELLO)
    spec = FunctionSpec(
        service=name, image=image, annotations=dict(annotations or {}), labels=dict(labels or {})
    )
    return await platform.system("POST", "/system/functions", spec.to_json())


def stats(platform: Platform, name: str) -> PoolStatistics:
    found = platform.worker.statistics(name)
    assert found is not None
    return found


async def available(platform: Platform, name: str, count: int) -> None:
    """Wait (at most 10 s) until the function has `count` ready instances."""
    for _ in range(200):
        if stats(platform, name).available == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}: {stats(platform, name)}")


async def call_every(
    platform: Platform,
    name: str,
    gap: float,
    calls: int,
    probe: Callable[[], None] | None = None,
) -> list[float]:
    """`calls` invocations, each `gap` seconds after the previous one ended (with `probe`
    called 0.4 s into each gap); their latencies."""
    latencies = []
    for k in range(calls):
        if k and probe is not None:
            await asyncio.sleep(0.4)
            probe()
            await asyncio.sleep(gap - 0.4)
        elif k:
            await asyncio.sleep(gap)
        started = time.monotonic()
        status, body, _ = await platform.invoke(name, b"x")
        assert (status, body) == (200, b"hello x")
        latencies.append(time.monotonic() - started)
    return latencies


async def test_a_periodic_app_is_unloaded_between_calls_and_served_prewarmed(
    tmp_path: Path,
) -> None:
    platform = await start_platform(tmp_path, policy="hybrid", bin_width=BIN)
    try:
        assert (await deploy(platform, "tick"))[0] == 202
        assert (await deploy(platform, "fixed", annotations={POLICY: "fixed:1s"}))[0] == 202
        # Five idle times teach the hybrid policy (before that it keeps the app loaded);
        # the fixed 1 s keep-alive unloads before every next call.
        learning = asyncio.gather(
            call_every(platform, "tick", 2.5, 6), call_every(platform, "fixed", 2.5, 6)
        )
        await learning
        tick, fixed = stats(platform, "tick"), stats(platform, "fixed")
        # The first call may wait for the instance the deploy started: a cold start at most.
        assert tick.cold_starts <= 1 and tick.available == 0  # unloaded at once after the 6th
        assert fixed.cold_starts >= 5 and fixed.prewarm_hits == 0
        learnt_cold = tick.cold_starts

        described = (await platform.system("GET", "/system/function/tick"))[1]
        assert isinstance(described, dict)
        keepalive = described["keepAlive"]
        assert keepalive["reason"] == "histogram" and keepalive["loaded"] is False
        assert 1.5 < keepalive["prewarmSeconds"] < 2.5 < keepalive["keepaliveSeconds"] < 3.5
        assert keepalive["loadInSeconds"] is not None
        launcher = platform.worker.launcher_statistics("tick")
        if platform.worker.zygote:  # unloaded means no zygote either
            assert launcher.zygote_pid is None and launcher.unloads >= 1

        unloaded_gaps = []  # whether each gap found the app without an instance
        # The same gap before the first of these calls: were it the time the fixed app's cold
        # starts happen to take (milliseconds, from the base zygote), the policy would learn an
        # idle time near 0, and rightly keep the app loaded.
        await asyncio.sleep(2.5)
        await call_every(
            platform,
            "tick",
            2.5,
            5,
            probe=lambda: unloaded_gaps.append(stats(platform, "tick").available == 0),
        )
        tick = stats(platform, "tick")
        assert tick.prewarm_hits >= 3, tick  # a slow zygote start may miss one or two
        assert tick.cold_starts - learnt_cold <= 5 - tick.prewarm_hits
        assert tick.prewarm_loads >= tick.prewarm_hits
        assert unloaded_gaps == [True] * 4
        assert tick.idle_instance_seconds < tick.instance_seconds

        metrics = await (await platform.session.get(platform.url + "/metrics")).text()
        assert 'faasd_function_prewarm_hits_total{function_name="tick.openfaas-fn"}' in metrics
        assert 'faasd_policy_decisions_total{app="tick",reason="histogram"}' in metrics
        assert 'faasd_policy_decisions_total{app="fixed",reason="fixed"}' in metrics
    finally:
        await stop_platform(platform)

    # A restart with the same data dir keeps what the policy learnt.
    again = await start_platform(tmp_path, policy="hybrid", bin_width=BIN)
    try:
        lifecycle = again.worker.policy_statistics("tick")
        assert lifecycle is not None and lifecycle.policy_statistics is not None
        learnt = lifecycle.policy_statistics.histogram
        assert learnt is not None and learnt.samples >= 10
        assert lifecycle.policy_statistics.reason.value == "histogram"
        assert lifecycle.loaded and stats(again, "tick").replicas == 1  # loaded at start
    finally:
        await stop_platform(again)


async def test_an_explicit_scale_min_pins_instances_the_policy_would_unload(
    tmp_path: Path,
) -> None:
    platform = await start_platform(tmp_path, policy="fixed:200ms", bin_width=BIN)
    try:
        await deploy(platform, "pinned", labels={"com.openfaas.scale.min": "1"})
        await deploy(platform, "loose")
        await available(platform, "pinned", 1)
        await call_every(platform, "pinned", 0.8, 3)
        await call_every(platform, "loose", 0.8, 3)
        await asyncio.sleep(0.8)
        pinned, loose = stats(platform, "pinned"), stats(platform, "loose")
        assert pinned.available == 1 and pinned.cold_starts == 0
        # The first call too, unless the instance its deploy started was late: a deploy is kept
        # loaded for the keep-alive (200 ms), and an instance that starts after it is stopped.
        assert loose.available == 0 and loose.cold_starts >= 2
        lifecycle = platform.worker.policy_statistics("pinned")
        assert lifecycle is not None and not lifecycle.loaded  # the policy unloaded; the pin won
        if platform.worker.zygote:
            assert platform.worker.launcher_statistics("pinned").unloads == 0
        # scale-function replicas pin too, and zero scales to zero at once.
        body = {"serviceName": "loose", "replicas": 2}
        assert (await platform.system("POST", "/system/scale-function/loose", body))[0] == 202
        await available(platform, "loose", 2)
        await call_every(platform, "loose", 0.1, 1)
        await asyncio.sleep(0.8)
        assert stats(platform, "loose").available == 2
        body = {"serviceName": "pinned", "replicas": 0}
        assert (await platform.system("POST", "/system/scale-function/pinned", body))[0] == 202
        await available(platform, "pinned", 0)
    finally:
        await stop_platform(platform)


async def test_policy_none_keeps_one_instance_as_before(tmp_path: Path) -> None:
    platform = await start_platform(tmp_path, policy="none", bin_width=BIN)
    try:
        await deploy(platform, "plain")
        await available(platform, "plain", 1)
        await call_every(platform, "plain", 0.5, 2)
        await asyncio.sleep(1.0)
        assert stats(platform, "plain").available == 1
        assert platform.worker.policy_statistics("plain") is None
        described = (await platform.system("GET", "/system/function/plain"))[1]
        assert isinstance(described, dict) and "keepAlive" not in described
    finally:
        await stop_platform(platform)


async def test_bad_and_conflicting_policy_annotations_are_400s_naming_it(
    platform: Platform,
) -> None:
    status, reply = await deploy(platform, "bad", annotations={POLICY: "sometimes"})
    assert status == 400 and isinstance(reply, dict)
    assert POLICY in reply["error"] and "unknown policy 'sometimes'" in reply["error"]
    app = {"com.faasd-py.app": "shop"}
    assert (await deploy(platform, "cart", labels=app, annotations={POLICY: "fixed:1m"}))[0] == 202
    status, reply = await deploy(platform, "pay", labels=app, annotations={POLICY: "fixed:2m"})
    assert status == 400 and isinstance(reply, dict)
    assert POLICY in reply["error"] and "app 'shop'" in reply["error"]
    # A function of the app without the annotation follows the app's policy.
    assert (await deploy(platform, "pay", labels=app))[0] == 202
    lifecycle = platform.worker.policy_statistics("pay")
    assert lifecycle is not None and lifecycle.policy == "fixed:1m"


async def test_an_explicit_scale_min_of_zero_deploys_with_no_instance(tmp_path: Path) -> None:
    """OpenFaaS's scale to zero: the label 0 starts nothing at deploy, whatever the policy
    would keep; the first call is a cold start, and the policy takes over from there."""
    platform = await start_platform(tmp_path)  # hybrid: it would keep a deployed app 4 h
    try:
        await deploy(platform, "lazy", labels={"com.openfaas.scale.min": "0"})
        await deploy(platform, "eager")
        await available(platform, "eager", 1)
        await asyncio.sleep(0.3)
        assert stats(platform, "lazy").available == 0
        lifecycle = platform.worker.policy_statistics("lazy")
        assert lifecycle is not None and not lifecycle.loaded
        status, body, _ = await platform.invoke("lazy", b"x")
        assert status == 200, body
        assert stats(platform, "lazy").cold_starts == 1
        assert stats(platform, "eager").cold_starts == 0
    finally:
        await stop_platform(platform)
