"""The /system API as the OpenFaaS CLI uses it, and the bad input it must turn away."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from faasd_py.spec import FunctionSpec
from tests.integration.conftest import HELLO, Platform


async def test_health_info_and_namespaces_need_no_function(platform: Platform) -> None:
    async with platform.session.get(platform.url + "/healthz") as response:
        assert response.status == 200
    status, info = await platform.system("GET", "/system/info")
    assert status == 200
    assert info["provider"]["provider"] == "faasd-py"
    assert info["provider"]["orchestration"] in ("sandbox", "process")
    assert set(info["version"]) >= {"sha", "release"} and info["arch"]
    assert await platform.system("GET", "/system/namespaces") == (200, ["openfaas-fn"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/system/functions"),
        ("POST", "/system/functions"),
        ("GET", "/system/secrets"),
        ("GET", "/system/logs?name=x"),
        ("POST", "/system/scale-function/x"),
    ],
)
async def test_system_routes_need_credentials(platform: Platform, method: str, path: str) -> None:
    for headers in (None, {"Authorization": "Basic " + base64.b64encode(b"admin:no").decode()}):
        async with platform.session.request(method, platform.url + path, headers=headers) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == 'Basic realm="faasd-py"'
            assert "credentials" in (await r.json())["error"]


async def test_deploy_lifecycle_as_the_openfaas_cli_does_it(platform: Platform) -> None:
    platform.build("hello:latest", HELLO)
    spec = FunctionSpec(service="hello", image="hello:latest", labels={"team": "a"})
    assert (await platform.system("PUT", "/system/functions", spec.to_json()))[0] == 404
    assert (await platform.system("POST", "/system/functions", spec.to_json()))[0] == 202

    status, described = await platform.system("GET", "/system/function/hello")
    assert status == 200
    assert described["name"] == "hello" and described["image"] == "hello:latest"
    assert described["labels"] == {"team": "a"} and described["namespace"] == "openfaas-fn"
    assert described["createdAt"].endswith("Z")

    updated = FunctionSpec(service="hello", image="hello:latest", env_vars={"V": "2"})
    assert (await platform.system("PUT", "/system/functions", updated.to_json()))[0] == 200
    _, listed = await platform.system("GET", "/system/functions")
    assert [(f["name"], f["envVars"]) for f in listed] == [("hello", {"V": "2"})]

    assert (await platform.invoke("hello", b"x"))[:2] == (200, b"hello x")
    _, described = await platform.system("GET", "/system/function/hello")
    assert described["invocationCount"] == 1
    assert described["availableReplicas"] == 1
    assert (await platform.system("PUT", "/system/functions", spec.to_json()))[0] == 200
    _, described = await platform.system("GET", "/system/function/hello")
    assert described["invocationCount"] == 1  # an update keeps counting

    remove = {"functionName": "hello"}
    assert (await platform.system("DELETE", "/system/functions", remove))[0] == 200
    assert (await platform.system("DELETE", "/system/functions", remove))[0] == 404
    assert (await platform.system("GET", "/system/function/hello"))[0] == 404


async def test_deploying_an_unbuilt_image_says_to_build(platform: Platform) -> None:
    spec = FunctionSpec(service="ghost", image="ghost:1.0")
    status, body = await platform.system("POST", "/system/functions", spec.to_json())
    assert status == 400
    assert "faasd-py build" in body["error"] and "ghost:1.0" in body["error"]


async def test_deploying_with_a_missing_secret_names_it(platform: Platform) -> None:
    platform.build("hello:latest", HELLO)
    spec = FunctionSpec(service="hello", image="hello:latest", secrets=("db-password",))
    status, body = await platform.system("POST", "/system/functions", spec.to_json())
    assert status == 400
    assert "db-password" in body["error"] and "secret create" in body["error"]


BAD_DEPLOYMENTS: list[tuple[Any, str]] = [
    ({"image": "hello:latest"}, "service"),
    ({"service": "hello"}, "image"),
    ({"service": "../x", "image": "hello:latest"}, "not a valid function name"),
    ({"service": "", "image": "hello:latest"}, "service"),
    ({"service": "a" * 64, "image": "hello:latest"}, "not a valid function name"),
    ({"service": "Hello", "image": "hello:latest"}, "not a valid function name"),
    ({"service": "hello", "image": "hello:latest", "envVars": {"A": 1}}, "envVars.A"),
    ({"service": "hello", "image": "hello:latest", "labels": ["x"]}, "labels"),
    ({"service": "hello", "image": "hello:latest", "limits": {"memory": "lots"}}, "limits.memory"),
    (["not", "an", "object"], "JSON object"),
]


@pytest.mark.parametrize(("body", "complaint"), BAD_DEPLOYMENTS)
async def test_bad_deployments_are_400_naming_the_field(
    platform: Platform, body: Any, complaint: str
) -> None:
    status, reply = await platform.system("POST", "/system/functions", body)
    assert status == 400
    assert complaint in reply["error"]


async def test_unknown_fields_are_ignored(platform: Platform) -> None:
    platform.build("hello:latest", HELLO)
    body = {"service": "hello", "image": "hello:latest", "someFutureField": {"x": 1}}
    assert (await platform.system("POST", "/system/functions", body))[0] == 202


@pytest.mark.parametrize("raw", ["{not json", "", "[1, 2"])
async def test_malformed_json_is_400(platform: Platform, raw: str) -> None:
    async with platform.session.post(
        platform.url + "/system/functions", data=raw, headers=platform.auth
    ) as response:
        assert response.status == 400
        assert "JSON" in (await response.json())["error"]


async def test_scale_function(platform: Platform) -> None:
    await platform.deploy("hello", HELLO, labels={"com.openfaas.scale.max": "3"})
    body = {"serviceName": "hello", "replicas": 3}
    assert (await platform.system("POST", "/system/scale-function/hello", body))[0] == 202
    for _ in range(100):
        _, described = await platform.system("GET", "/system/function/hello")
        if described["availableReplicas"] == 3:
            break
        await asyncio.sleep(0.05)
    assert described["replicas"] == 3 and described["availableReplicas"] == 3

    body = {"service": "hello", "replicas": 1}  # older clients send "service"
    assert (await platform.system("POST", "/system/scale-function/hello", body))[0] == 202
    for _ in range(100):
        _, described = await platform.system("GET", "/system/function/hello")
        if described["availableReplicas"] == 1:
            break
        await asyncio.sleep(0.05)
    assert described["availableReplicas"] == 1

    bad = {"serviceName": "hello", "replicas": -1}
    status, reply = await platform.system("POST", "/system/scale-function/hello", bad)
    assert status == 400 and "replicas" in reply["error"]
    unknown = {"serviceName": "nope", "replicas": 1}
    assert (await platform.system("POST", "/system/scale-function/nope", unknown))[0] == 404


async def test_secrets_crud(platform: Platform) -> None:
    assert (await platform.system("POST", "/system/secrets", {"name": "k", "value": "v1"}))[
        0
    ] == 201
    status, reply = await platform.system("POST", "/system/secrets", {"name": "k", "value": "x"})
    assert status == 409 and "already exists" in reply["error"]
    raw = {"name": "bin", "rawValue": base64.b64encode(b"\x00\xff").decode()}
    assert (await platform.system("POST", "/system/secrets", raw))[0] == 201
    assert (await platform.system("PUT", "/system/secrets", {"name": "k", "value": "v2"}))[0] == 200
    assert (await platform.system("PUT", "/system/secrets", {"name": "zz", "value": "v"}))[0] == 404
    _, listed = await platform.system("GET", "/system/secrets")
    assert [s["name"] for s in listed] == ["bin", "k"]
    assert all("value" not in s for s in listed)  # values never leave the gateway
    assert (await platform.system("DELETE", "/system/secrets", {"name": "k"}))[0] == 200
    assert (await platform.system("DELETE", "/system/secrets", {"name": "k"}))[0] == 404

    bad_raw = {"name": "b", "rawValue": "%%%"}
    assert (await platform.system("POST", "/system/secrets", bad_raw))[0] == 400
    assert (await platform.system("POST", "/system/secrets", {"name": "../etc", "value": "v"}))[
        0
    ] == 400
    assert (await platform.system("POST", "/system/secrets", {"name": "n"}))[0] == 400


async def test_logs_as_ndjson_with_tail_since_and_follow(platform: Platform) -> None:
    await platform.deploy(
        "talker",
        "import sys\n\n\ndef handle(event, context):\n"
        "    print('said', event.body.decode(), flush=True)\n"
        "    if event.body == b'two':\n"
        "        print('warned two', file=sys.stderr, flush=True)\n",
    )
    for word in ("one", "two", "three"):
        await platform.invoke("talker", word.encode())
    await asyncio.sleep(0.3)
    lines = await platform.logs("talker")
    said = [line["text"] for line in lines if line["text"].startswith("said")]
    assert said == ["said one", "said two", "said three"]
    # Each line says which stream it came from (faasd-py's extension of OpenFaaS's fields).
    streams = {line["text"]: line["stream"] for line in lines}
    assert streams["said two"] == "stdout" and streams["warned two"] == "stderr"
    assert set(lines[0]) == {"name", "namespace", "instance", "timestamp", "text", "stream"}
    assert lines[0]["name"] == "talker" and lines[0]["instance"].startswith("talker-")

    status, tail = await platform.system("GET", "/system/logs?name=talker&tail=1")
    assert status == 200 and tail["text"] == "said three"
    # OpenFaaS reads a tail of 0 (or less) as no limit.
    for unlimited in ("0", "-1"):
        assert await platform.logs("talker", f"&tail={unlimited}") == lines
    status, text = await platform.system(
        "GET", "/system/logs?name=talker&since=2999-01-01T00:00:00Z"
    )
    assert (status, text) == (200, None)

    url = platform.url + "/system/logs?name=talker&tail=1&follow=true"
    async with platform.session.get(url, headers=platform.auth) as response:
        assert response.headers["Content-Type"] == "application/x-ndjson"
        line = await asyncio.wait_for(response.content.readline(), 5)
        assert json.loads(line)["text"] == "said three"
        await platform.invoke("talker", b"live")
        line = await asyncio.wait_for(response.content.readline(), 5)
        assert json.loads(line)["text"] == "said live"

    assert (await platform.system("GET", "/system/logs?name=nope"))[0] == 404
    assert (await platform.system("GET", "/system/logs"))[0] == 400
    assert (await platform.system("GET", "/system/logs?name=talker&tail=x"))[0] == 400
    assert (await platform.system("GET", "/system/logs?name=talker&since=yesterday"))[0] == 400


async def test_metrics_use_openfaas_names(platform: Platform) -> None:
    await platform.deploy("hello", HELLO)
    await platform.invoke("hello", b"a")
    await platform.invoke("nope")
    async with platform.session.get(platform.url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert (
        'gateway_function_invocation_total{code="200",function_name="hello.openfaas-fn"} 1.0'
        in text
    )
    assert (
        'gateway_function_invocation_total{code="404",function_name="nope.openfaas-fn"} 1.0' in text
    )
    assert 'gateway_functions_seconds_count{code="200",function_name="hello.openfaas-fn"}' in text
    assert 'gateway_service_count{function_name="hello.openfaas-fn"} 1.0' in text
    assert "gateway_function_cold_start_total" in text
    # The process-wide bounds: logs held, memory reserved, connections open.
    assert await platform.metric("faasd_log_buffers") == 1
    log_limit = await platform.metric("faasd_log_bytes_limit")
    assert log_limit == platform.config.log_total_bytes
    assert await platform.metric("faasd_admission_instances") == 1
    assert (await platform.metric("faasd_connections_open") or 0) >= 1


async def test_unknown_route_is_json_404(platform: Platform) -> None:
    async with platform.session.get(platform.url + "/nothing-here") as response:
        assert response.status == 404
        assert (await response.json())["status"] == 404


async def test_text_that_is_not_unicode_is_a_400_not_a_500(platform: Platform) -> None:
    """Found by schemathesis: base64 of non-ASCII text, and JSON's lone surrogate escapes."""
    cases = [
        ("POST", "/system/secrets", r'{"name": "a", "rawValue": "\u00e9"}', "rawValue"),
        ("POST", "/system/secrets", r'{"name": "b", "value": "\ud800"}', "lone surrogate"),
        ("PUT", "/system/secrets", r'{"name": "b", "value": "x\udfff"}', "lone surrogate"),
        (
            "POST",
            "/system/functions",
            r'{"service": "s", "image": "s:latest", "envVars": {"k": "\ud800"}}',
            "lone surrogate",
        ),
    ]
    for method, path, body, said in cases:
        async with platform.session.request(
            method, platform.url + path, data=body.encode(), headers=platform.auth
        ) as response:
            reply = await response.json()
            assert response.status == 400, (path, body, reply)
            assert said in reply["error"], reply
    # A whole surrogate pair is ordinary text.
    status, _ = await platform.system(
        "POST", "/system/secrets", {"name": "emoji", "value": "\U0001f600"}
    )
    assert status == 201
