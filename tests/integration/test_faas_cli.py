"""The exact requests the OpenFaaS CLI (faas-cli 0.18.x) and its go-sdk send, replayed against a
real faasd-py, with what they need back: the status codes they accept and the fields they parse.

The requests come from faas-cli's `proxy/*.go` and `commands/*.go`, the go-sdk's `client.go`
and `functions.go`, and faas-provider's `types` and `logs` packages (issue 10). Two clients:
faas-cli's own proxy client (`proxy/client.go`: `User-Agent: faas-cli/VERSION`,
`Content-Type: application/json` on bodies, `?namespace=` in the query) and the go-sdk it uses
for invoke and namespaces (Go's default User-Agent, no Content-Type, `namespace` in the JSON
body, `/function/NAME.NAMESPACE` always).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.integration.conftest import (
    Platform,
    Receiver,
    json_or_text,
    start_platform,
    stop_platform,
)

DEFAULT = "openfaas-fn"
CLI_AGENT = "faas-cli/0.18.12"  # proxy.NewClient: UserAgent "faas-cli/<version>"
INVOKE_AGENT = "faas-cli/0.18.12 (openfaas; linux; amd64)"  # commands/invoke.go
GO_AGENT = "Go-http-client/1.1"  # the go-sdk sets none: Go's default
OK = (200, 201, 202)  # what every faas-cli/go-sdk mutation accepts as success

# Go's time.Time.UnmarshalJSON accepts RFC3339 (fraction optional) and nothing else.
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")

Client = Literal["cli", "sdk"]

ECHO_HEADERS = """
def handle(event, context):
    return {"statusCode": 200, "body": {k.lower(): v for k, v in event.headers.items()}}
"""

ECHO_REQUEST = """
def handle(event, context):
    return {
        "statusCode": 200,
        "body": {"method": event.method, "path": event.path, "query": dict(event.query),
                 "body": event.body.decode(), "type": event.headers.get("content-type"),
                 "agent": event.headers.get("user-agent"),
                 "custom": event.headers.get("x-custom"),
                 "auth": event.headers.get("authorization")},
    }
"""


def says(word: str) -> str:
    return f"def handle(event, context):\n    return {word!r}\n"


def go_json(body: Any) -> bytes:
    """JSON as Go's encoding/json writes it: compact, fields in declaration order."""
    return json.dumps(body, separators=(",", ":")).encode()


async def send(
    platform: Platform,
    method: str,
    path: str,
    body: Any = None,
    *,
    client: Client = "cli",
    auth: bool = True,
) -> tuple[int, Any]:
    """One /system request with the headers the given client sets; (status, JSON or text)."""
    headers = {"User-Agent": CLI_AGENT if client == "cli" else GO_AGENT}
    if auth:
        headers.update(platform.auth)
    if body is not None and client == "cli":
        headers["Content-Type"] = "application/json"
    async with platform.session.request(
        method,
        platform.url + path,
        data=None if body is None else go_json(body),
        headers=headers,
        skip_auto_headers=("Content-Type",),
    ) as response:
        return response.status, await json_or_text(response)


def error_text(reply: Any) -> str:
    """The message faas-cli prints: it shows the body as it is, JSON or text."""
    return reply if isinstance(reply, str) else json.dumps(reply)


def deployment(
    name: str,
    image: str,
    *,
    namespace: str | None = None,
    secrets: tuple[str, ...] = (),
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """types.FunctionDeployment as proxy/deploy.go marshals it: `namespace` and `secrets` are
    omitempty, while labels and annotations are pointers to maps, so they are always present
    and `null` when the stack gives none."""
    body: dict[str, Any] = {"service": name, "image": image}
    if namespace:
        body["namespace"] = namespace
    if secrets:
        body["secrets"] = list(secrets)
    body["labels"] = dict(labels) if labels else None
    body["annotations"] = None
    return body


async def cli_deploy(
    platform: Platform,
    name: str,
    source: str,
    *,
    image: str | None = None,
    namespace: str | None = None,
    secrets: tuple[str, ...] = (),
    labels: Mapping[str, str] | None = None,
) -> None:
    """`faas-cli deploy`: PUT /system/functions, then POST on 404; 200/201/202 is success."""
    image = image or f"{name}:latest"
    platform.build(image, source)
    body = deployment(name, image, namespace=namespace, secrets=secrets, labels=labels)
    status, reply = await send(platform, "PUT", "/system/functions", body)
    if status == 404:
        status, reply = await send(platform, "POST", "/system/functions", body)
    assert status in OK, (status, reply)


async def create_namespace(
    platform: Platform, name: str, labels: Mapping[str, str] | None = None
) -> None:
    """`faas-cli namespace create NAME`: the go-sdk POSTs to /system/namespace/ (trailing
    slash, the name only in the body) and always adds label and annotation openfaas=1."""
    body = {
        "name": name,
        "annotations": {"openfaas": "1"},
        "labels": {**(labels or {}), "openfaas": "1"},
    }
    status, reply = await send(platform, "POST", "/system/namespace/", body, client="sdk")
    assert status in OK, (status, reply)


async def cli_invoke(
    platform: Platform,
    name: str,
    body: bytes = b"",
    *,
    namespace: str = DEFAULT,
    method: str = "POST",
    query: str = "",
    headers: Mapping[str, str] | None = None,
    subpath: str = "",
    asynchronous: bool = False,
) -> tuple[int, bytes, Mapping[str, str]]:
    """`faas-cli invoke`: go-sdk InvokeFunction always calls /function/NAME.NAMESPACE (with
    --async, /async-function/NAME.NAMESPACE), with faas-cli's Content-Type (default
    text/plain) and User-Agent, and no Authorization."""
    route = "async-function" if asynchronous else "function"
    url = f"{platform.url}/{route}/{name}.{namespace}{subpath}" + (f"?{query}" if query else "")
    sent = {"Content-Type": "text/plain", "User-Agent": INVOKE_AGENT, **(headers or {})}
    async with platform.session.request(method, url, data=body, headers=sent) as response:
        return response.status, await response.read(), response.headers


def decode_ndjson(raw: bytes) -> list[dict[str, Any]]:
    """What the go-sdk's `json.NewDecoder(body)` + `decoder.More()` loop reads."""
    decoder, text, at = json.JSONDecoder(), raw.decode(), 0
    messages: list[dict[str, Any]] = []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return messages
        message, at = decoder.raw_decode(text, at)
        messages.append(message)


async def cli_logs(platform: Platform, query: str) -> tuple[int, list[dict[str, Any]]]:
    url = f"{platform.url}/system/logs?{query}"
    headers = {**platform.auth, "User-Agent": CLI_AGENT}
    async with platform.session.get(url, headers=headers) as response:
        raw = await asyncio.wait_for(response.read(), 10)  # follow=false: the stream ends
        if response.status != 200:
            return response.status, [{"error": raw.decode()}]
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        return response.status, decode_ndjson(raw)


def assert_function_status(status: Mapping[str, Any], name: str, namespace: str) -> None:
    """The fields of types.FunctionStatus that faas-cli list/describe/ready decode, with the
    types Go's decoder insists on."""
    assert status["name"] == name and status["namespace"] == namespace
    assert isinstance(status["image"], str) and status["image"]
    assert isinstance(status["invocationCount"], int | float)
    for field in ("replicas", "availableReplicas"):
        value = status.get(field, 0)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, field
    assert RFC3339.fullmatch(status["createdAt"]), status["createdAt"]


async def wait_for(
    platform: Platform, path: str, ready: Any, *, attempts: int = 100
) -> dict[str, Any]:
    """Poll a GET (as `faas-cli ready` does) until `ready(reply)`; the last reply."""
    reply: Any = None
    for _ in range(attempts):
        status, reply = await send(platform, "GET", path)
        if status == 200 and ready(reply):
            break
        await asyncio.sleep(0.1)
    assert isinstance(reply, dict)
    return reply


# --- login, info, list, describe, ready --------------------------------------------------------


async def test_login_checks_credentials_with_get_system_functions(platform: Platform) -> None:
    # commands/login.go validateLogin: GET /system/functions with basic auth; 200 is good.
    status, listed = await send(platform, "GET", "/system/functions")
    assert (status, listed) == (200, [])
    wrong = {"Authorization": "Basic " + "YWRtaW46bm9wZQ==", "User-Agent": CLI_AGENT}
    async with platform.session.get(platform.url + "/system/functions", headers=wrong) as r:
        assert r.status == 401  # "unable to login, either username or password is incorrect"


async def test_system_info_has_what_faas_cli_version_and_store_read(platform: Platform) -> None:
    status, info = await send(platform, "GET", "/system/info")
    assert status == 200
    provider = info["provider"]
    assert provider["provider"] and provider["orchestration"]
    assert set(provider["version"]) >= {"sha", "release"}
    assert set(info["version"]) >= {"sha", "release"}
    assert isinstance(info["arch"], str) and info["arch"]  # store deploy picks images by it


async def test_deploy_puts_then_posts_the_body_faas_cli_marshals(platform: Platform) -> None:
    platform.build("hello:latest", says("hi"))
    body = deployment("hello", "hello:latest", namespace=DEFAULT)
    assert body["labels"] is None and body["annotations"] is None
    status, reply = await send(platform, "PUT", "/system/functions", body)
    assert status == 404, reply  # the CLI then POSTs
    status, reply = await send(platform, "POST", "/system/functions", body)
    assert status in OK, reply
    status, reply = await send(platform, "PUT", "/system/functions", body)
    assert status == 200, reply  # "Function hello already exists, attempting rolling-update."

    # A stack.yml without `namespace:` sends none: the default namespace.
    status, reply = await send(
        platform, "PUT", "/system/functions", deployment("hello", "hello:latest")
    )
    assert status == 200, reply
    status, listed = await send(platform, "GET", f"/system/functions?namespace={DEFAULT}")
    assert status == 200 and [f["name"] for f in listed] == ["hello"]


async def test_list_and_describe_with_namespace_query(platform: Platform) -> None:
    await cli_deploy(platform, "hello", says("hi"), labels={"team": "a"})
    assert (await cli_invoke(platform, "hello"))[0] == 200

    for path in ("/system/functions", f"/system/functions?namespace={DEFAULT}"):
        status, listed = await send(platform, "GET", path)
        assert status == 200 and len(listed) == 1, (path, listed)
        assert_function_status(listed[0], "hello", DEFAULT)
        assert listed[0]["invocationCount"] == 1 and listed[0]["image"] == "hello:latest"

    status, described = await send(platform, "GET", f"/system/function/hello?namespace={DEFAULT}")
    assert status == 200
    assert_function_status(described, "hello", DEFAULT)
    assert described["labels"] == {"team": "a"}

    status, reply = await send(platform, "GET", f"/system/function/nope?namespace={DEFAULT}")
    assert status == 404 and "nope" in error_text(reply)  # "No such function: nope"


async def test_ready_sees_available_replicas_without_an_invocation(platform: Platform) -> None:
    # commands/ready.go: `faas-cli ready NAME` polls describe until availableReplicas > 0,
    # once a second for 60 s; it never invokes the function.
    await cli_deploy(platform, "hello", says("hi"))
    described = await wait_for(
        platform,
        f"/system/function/hello?namespace={DEFAULT}",
        lambda reply: reply.get("availableReplicas", 0) > 0,
    )
    assert described["availableReplicas"] > 0
    async with platform.session.get(platform.url + "/healthz") as response:  # `faas-cli ready`
        assert response.status == 200


# --- invoke ------------------------------------------------------------------------------------


async def test_invoke_by_name_dot_namespace(platform: Platform) -> None:
    await cli_deploy(platform, "echo", ECHO_REQUEST)
    status, body, _ = await cli_invoke(
        platform,
        "echo",
        b"payload",
        query="org=openfaas&repo=faas-cli",
        headers={"X-Custom": "yes"},
    )
    assert status == 200, body
    seen = json.loads(body)
    assert seen["method"] == "POST" and seen["path"] == "/" and seen["body"] == "payload"
    assert seen["query"] == {"org": "openfaas", "repo": "faas-cli"}
    assert seen["type"] == "text/plain" and seen["agent"] == INVOKE_AGENT
    assert seen["custom"] == "yes" and seen["auth"] is None

    # --method GET, a path beyond the name, and the bare name still answer.
    status, body, _ = await cli_invoke(platform, "echo", method="GET", subpath="/a/b")
    assert status == 200 and json.loads(body)["path"] == "/a/b"
    assert (await platform.invoke("echo"))[0] == 200

    status, body, _ = await cli_invoke(platform, "nope")
    assert status == 404 and b"nope" in body  # faas-cli prints the body with the code
    assert b"openfaas-fn.openfaas-fn" not in body


async def test_invoke_async_with_a_callback_header(platform: Platform, receiver: Receiver) -> None:
    """`faas-cli invoke --async -H X-Callback-Url=URL`: 202 is what it reports as "Function
    submitted asynchronously"; the result then reaches the callback."""
    await cli_deploy(platform, "echo", ECHO_REQUEST)
    status, body, headers = await cli_invoke(
        platform,
        "echo",
        b"later",
        asynchronous=True,
        headers={"X-Callback-Url": receiver.url},
    )
    assert (status, body) == (202, b"")
    callback = await receiver.next()
    assert callback.headers["X-Call-Id"] == headers["X-Call-Id"]
    assert callback.headers["X-Function-Name"] == "echo.openfaas-fn"
    seen = json.loads(callback.body)
    assert seen["body"] == "later" and seen["agent"] == INVOKE_AGENT


async def test_function_sees_forwarding_and_call_headers(platform: Platform) -> None:
    # The OpenFaaS gateway adds X-Forwarded-For, X-Forwarded-Host, X-Call-Id (generated when
    # the client sent none) and X-Start-Time (unix nanoseconds) to what the function receives.
    await cli_deploy(platform, "headers", ECHO_HEADERS)
    before = time.time_ns()
    status, body, headers = await cli_invoke(platform, "headers")
    after = time.time_ns()
    assert status == 200, body
    seen = json.loads(body)
    assert seen["x-forwarded-for"].startswith("127.0.0.1")
    assert seen["x-forwarded-host"] == platform.url.removeprefix("http://")
    assert str(uuid.UUID(seen["x-call-id"])) == seen["x-call-id"]
    assert seen["x-call-id"] == headers["X-Call-Id"]
    assert before - 60 * 10**9 <= int(seen["x-start-time"]) <= after

    status, body, headers = await cli_invoke(platform, "headers", headers={"X-Call-Id": "abc-1"})
    assert json.loads(body)["x-call-id"] == "abc-1" == headers["X-Call-Id"]


async def test_metrics_name_functions_name_dot_namespace_once(platform: Platform) -> None:
    await cli_deploy(platform, "hello", says("hi"))
    assert (await cli_invoke(platform, "hello"))[0] == 200
    assert (await platform.invoke("hello"))[0] == 200
    assert (await cli_invoke(platform, "nope"))[0] == 404
    async with platform.session.get(platform.url + "/metrics") as response:
        text = await response.text()
    assert (
        'gateway_function_invocation_total{code="200",function_name="hello.openfaas-fn"} 2.0'
        in text
    )
    assert 'function_name="nope.openfaas-fn"' in text
    assert ".openfaas-fn.openfaas-fn" not in text


# --- remove, logs ------------------------------------------------------------------------------


async def test_remove_as_faas_cli_and_go_sdk_send_it(platform: Platform) -> None:
    await cli_deploy(platform, "hello", says("hi"))
    await cli_deploy(platform, "other", says("hi"))
    # faas-cli proxy/delete.go: namespace in the query, {"functionName"} in the body.
    body = {"functionName": "hello"}
    status, reply = await send(platform, "DELETE", f"/system/functions?namespace={DEFAULT}", body)
    assert status in OK, reply
    status, reply = await send(platform, "DELETE", f"/system/functions?namespace={DEFAULT}", body)
    assert status == 404, reply  # "No existing function to remove"
    # go-sdk DeleteFunction: the namespace in the body, no query.
    sdk = {"functionName": "other", "namespace": DEFAULT}
    status, reply = await send(platform, "DELETE", "/system/functions", sdk, client="sdk")
    assert status in OK, reply
    assert (await send(platform, "GET", "/system/functions"))[1] == []


async def test_logs_stream_as_the_cli_parses_it(platform: Platform) -> None:
    await cli_deploy(
        platform, "talker", "def handle(event, context):\n    print('said', event.body.decode())\n"
    )
    for word in (b"one", b"two", b"three"):
        assert (await cli_invoke(platform, "talker", word))[0] == 200
    await asyncio.sleep(0.3)

    # proxy/logs.go reqAsQueryValues (url.Values.Encode sorts the keys) and go-sdk
    # generateLogRequest (follow=0/1).
    for query in (
        f"follow=false&name=talker&namespace={DEFAULT}",
        f"follow=0&name=talker&namespace={DEFAULT}",
        "follow=false&name=talker",
    ):
        status, messages = await cli_logs(platform, query)
        assert status == 200, messages
        said = [m["text"] for m in messages if m["text"].startswith("said")]
        assert said == ["said one", "said two", "said three"], query
        for message in messages:
            assert set(message) >= {"name", "namespace", "instance", "timestamp", "text"}
            assert message["name"] == "talker" and message["namespace"] == DEFAULT
            assert RFC3339.fullmatch(message["timestamp"]), message["timestamp"]

    status, messages = await cli_logs(platform, "follow=false&name=talker&tail=1")
    assert [m["text"] for m in messages] == ["said three"]
    instance = messages[0]["instance"]  # `faas-cli logs --instance`
    status, messages = await cli_logs(platform, f"follow=false&instance={instance}&name=talker")
    assert status == 200 and messages and {m["instance"] for m in messages} == {instance}
    status, messages = await cli_logs(platform, "follow=false&name=talker&instance=elsewhere")
    assert (status, messages) == (200, [])
    status, messages = await cli_logs(
        platform, "follow=false&name=talker&since=2999-01-01T00%3A00%3A00Z"
    )
    assert (status, messages) == (200, [])
    status, reply = await cli_logs(platform, f"follow=false&name=nope&namespace={DEFAULT}")
    assert status == 404 and "nope" in reply[0]["error"]


async def test_logs_tail_zero_or_negative_means_no_limit(platform: Platform) -> None:
    # faas-provider logs.Request: "Tail sets the maximum number of log messages to return,
    # <=0 means unlimited".
    await cli_deploy(
        platform, "talker", "def handle(event, context):\n    print('said', event.body.decode())\n"
    )
    for word in (b"one", b"two"):
        assert (await cli_invoke(platform, "talker", word))[0] == 200
    await asyncio.sleep(0.3)
    for tail in ("0", "-1"):
        status, messages = await cli_logs(platform, f"follow=false&name=talker&tail={tail}")
        said = [m["text"] for m in messages if m["text"].startswith("said")]
        assert (status, said) == (200, ["said one", "said two"]), tail


# --- secrets -----------------------------------------------------------------------------------


async def test_secrets_with_namespace_in_body_and_query(platform: Platform) -> None:
    # proxy/secret.go: create/update/remove carry types.Secret with `namespace`; list takes
    # ?namespace=.
    create = {"name": "db-password", "namespace": DEFAULT, "value": "s3cret"}
    status, reply = await send(platform, "POST", "/system/secrets", create)
    assert status in OK, reply
    status, reply = await send(platform, "POST", "/system/secrets", create)
    assert status == 409, reply  # 'secret with the name "db-password" already exists'
    # Without a namespace (faas-cli's default flag is ""): the default namespace.
    status, reply = await send(platform, "POST", "/system/secrets", {"name": "k", "value": "v"})
    assert status in OK, reply

    status, listed = await send(platform, "GET", f"/system/secrets?namespace={DEFAULT}")
    assert status in (200, 202)
    assert sorted((s["name"], s.get("namespace", DEFAULT)) for s in listed) == [
        ("db-password", DEFAULT),
        ("k", DEFAULT),
    ]
    assert all("value" not in s for s in listed)

    update = {"name": "db-password", "namespace": DEFAULT, "value": "n3w"}
    status, reply = await send(platform, "PUT", "/system/secrets", update)
    assert status in (200, 202), reply
    missing = {"name": "ghost", "namespace": DEFAULT, "value": "x"}
    assert (await send(platform, "PUT", "/system/secrets", missing))[0] == 404

    remove = {"name": "db-password", "namespace": DEFAULT}
    status, reply = await send(platform, "DELETE", "/system/secrets", remove)
    assert status in (200, 202), reply
    assert (await send(platform, "DELETE", "/system/secrets", remove))[0] == 404


# --- namespaces --------------------------------------------------------------------------------


async def test_namespace_get_create_update_delete_as_the_go_sdk_sends_them(
    platform: Platform,
) -> None:
    status, names = await send(platform, "GET", "/system/namespaces", client="sdk")
    assert (status, names) == (200, [DEFAULT])  # []string
    status, found = await send(platform, "GET", f"/system/namespace/{DEFAULT}", client="sdk")
    assert status == 200 and found["name"] == DEFAULT

    await create_namespace(platform, "staging", {"team": "a"})
    status, found = await send(platform, "GET", "/system/namespace/staging", client="sdk")
    assert status == 200, found
    assert found["name"] == "staging" and found["labels"]["team"] == "a"
    assert found["labels"]["openfaas"] == "1" and found["annotations"]["openfaas"] == "1"
    status, names = await send(platform, "GET", "/system/namespaces", client="sdk")
    assert sorted(names) == [DEFAULT, "staging"]

    update = {
        "name": "staging",
        "annotations": {"owner": "b", "openfaas": "1"},
        "labels": {"team": "b", "openfaas": "1"},
    }
    status, reply = await send(platform, "PUT", "/system/namespace/staging", update, client="sdk")
    assert status in OK, reply
    status, found = await send(platform, "GET", "/system/namespace/staging", client="sdk")
    assert found["labels"]["team"] == "b" and found["annotations"]["owner"] == "b"

    delete = {"name": "staging", "labels": {"openfaas": "1"}}
    status, reply = await send(
        platform, "DELETE", "/system/namespace/staging", delete, client="sdk"
    )
    assert status in OK, reply
    status, reply = await send(platform, "GET", "/system/namespace/staging", client="sdk")
    assert status == 404 and "staging" in error_text(reply)  # "namespace staging not found"
    status, reply = await send(
        platform, "DELETE", "/system/namespace/staging", delete, client="sdk"
    )
    assert status == 404, reply


async def test_a_second_namespace_holds_its_own_function_and_secret(platform: Platform) -> None:
    await create_namespace(platform, "dev")
    create = {"name": "token", "namespace": "dev", "value": "dev-token"}
    status, reply = await send(platform, "POST", "/system/secrets", create)
    assert status in OK, reply
    reader = "def handle(event, context):\n    return context.secret('token')\n"
    await cli_deploy(platform, "reader", reader, namespace="dev", secrets=("token",))

    status, body, _ = await cli_invoke(platform, "reader", namespace="dev")
    assert (status, body) == (200, b"dev-token")
    assert (await platform.invoke("reader"))[0] == 404  # the bare name is openfaas-fn's
    status, listed = await send(platform, "GET", "/system/functions?namespace=dev")
    assert status == 200 and [f["name"] for f in listed] == ["reader"]
    assert_function_status(listed[0], "reader", "dev")
    assert (await send(platform, "GET", "/system/functions"))[1] == []  # default: none
    status, described = await send(platform, "GET", "/system/function/reader?namespace=dev")
    assert status == 200 and described["namespace"] == "dev"

    status, secrets = await send(platform, "GET", "/system/secrets?namespace=dev")
    assert status == 200 and [s["name"] for s in secrets] == ["token"]
    assert (await send(platform, "GET", f"/system/secrets?namespace={DEFAULT}"))[1] == []

    # A function in the default namespace cannot mount dev's secret.
    platform.build("thief:latest", reader)
    thief = deployment("thief", "thief:latest", secrets=("token",))
    status, reply = await send(platform, "POST", "/system/functions", thief)
    assert status == 400 and "token" in error_text(reply)
    # The same secret name in the default namespace is another secret.
    mine = {"name": "token", "namespace": DEFAULT, "value": "default-token"}
    assert (await send(platform, "POST", "/system/secrets", mine))[0] in OK
    await cli_deploy(platform, "thief", reader, secrets=("token",))
    assert (await cli_invoke(platform, "thief"))[:2] == (200, b"default-token")
    assert (await cli_invoke(platform, "reader", namespace="dev"))[:2] == (200, b"dev-token")

    status, messages = await cli_logs(platform, "follow=false&name=reader&namespace=dev")
    assert status == 200 and all(m["namespace"] == "dev" for m in messages)


async def test_the_same_name_in_two_namespaces_are_two_functions(platform: Platform) -> None:
    await create_namespace(platform, "dev")
    await cli_deploy(platform, "greet", says("from default"), image="greet-a:latest")
    await cli_deploy(platform, "greet", says("from dev"), image="greet-b:latest", namespace="dev")

    assert (await cli_invoke(platform, "greet"))[:2] == (200, b"from default")
    assert (await platform.invoke("greet"))[:2] == (200, b"from default")
    assert (await cli_invoke(platform, "greet", namespace="dev"))[:2] == (200, b"from dev")

    async with platform.session.get(platform.url + "/metrics") as response:
        text = await response.text()
    assert 'function_name="greet.dev"' in text and 'function_name="greet.openfaas-fn"' in text

    body = {"functionName": "greet"}
    status, reply = await send(platform, "DELETE", "/system/functions?namespace=dev", body)
    assert status in OK, reply
    assert (await cli_invoke(platform, "greet", namespace="dev"))[0] == 404
    assert (await cli_invoke(platform, "greet"))[:2] == (200, b"from default")


async def test_a_function_is_not_found_through_another_namespace(platform: Platform) -> None:
    await cli_deploy(platform, "hello", says("hi"))
    await create_namespace(platform, "other")
    status, reply = await send(platform, "GET", "/system/function/hello?namespace=other")
    assert status == 404 and "hello" in error_text(reply), reply
    status, body, _ = await cli_invoke(platform, "hello", namespace="other")
    assert status == 404 and b"hello" in body
    status, reply = await send(
        platform, "DELETE", "/system/functions?namespace=other", {"functionName": "hello"}
    )
    assert status == 404, reply
    assert (await cli_invoke(platform, "hello"))[:2] == (200, b"hi")  # untouched


async def test_removing_a_namespace_that_holds_a_function_is_refused(platform: Platform) -> None:
    await create_namespace(platform, "busy")
    await cli_deploy(platform, "worker", says("hi"), namespace="busy")
    delete = {"name": "busy", "labels": {"openfaas": "1"}}
    status, reply = await send(platform, "DELETE", "/system/namespace/busy", delete, client="sdk")
    assert 400 <= status < 500 and status != 404, (status, reply)
    message = error_text(reply)
    assert "busy" in message and "worker" in message
    assert (await cli_invoke(platform, "worker", namespace="busy"))[:2] == (200, b"hi")

    body = {"functionName": "worker"}
    assert (await send(platform, "DELETE", "/system/functions?namespace=busy", body))[0] in OK
    status, reply = await send(platform, "DELETE", "/system/namespace/busy", delete, client="sdk")
    assert status in OK, reply


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/system/functions?namespace=ghost", None),
        ("GET", "/system/function/hello?namespace=ghost", None),
        ("GET", "/system/secrets?namespace=ghost", None),
        ("GET", "/system/logs?follow=false&name=hello&namespace=ghost", None),
        ("GET", "/system/namespace/ghost", None),
        ("POST", "/system/secrets", {"name": "k", "namespace": "ghost", "value": "v"}),
        ("POST", "/system/functions", deployment("hello", "hello:latest", namespace="ghost")),
        ("DELETE", "/system/functions?namespace=ghost", {"functionName": "hello"}),
        ("PUT", "/system/secrets", {"name": "k", "namespace": "ghost", "value": "v"}),
        ("DELETE", "/system/secrets", {"name": "k", "namespace": "ghost"}),
        (
            "POST",
            "/system/scale-function/hello",
            {"serviceName": "hello", "replicas": 1, "namespace": "ghost"},
        ),
    ],
)
async def test_an_unknown_namespace_is_404_naming_it(
    platform: Platform, method: str, path: str, body: Any
) -> None:
    platform.build("hello:latest", says("hi"))
    status, reply = await send(platform, method, path, body)
    assert status == 404 and "ghost" in error_text(reply), (status, reply)


async def test_invoking_in_an_unknown_namespace_is_404_naming_it(platform: Platform) -> None:
    status, body, _ = await cli_invoke(platform, "hello", namespace="ghost")
    assert status == 404 and b"ghost" in body


# --- scale -------------------------------------------------------------------------------------


async def test_scale_function_replicas_survive_a_restart(tmp_path: Path) -> None:
    labels = {"com.openfaas.scale.max": "3"}
    first = await start_platform(tmp_path)
    try:
        await cli_deploy(first, "hello", says("hi"), labels=labels)
        # types.ScaleServiceRequest; the namespace in the body (newer go-sdk, faas-cli proxy).
        scale = {"serviceName": "hello", "replicas": 2, "namespace": DEFAULT}
        status, reply = await send(first, "POST", "/system/scale-function/hello", scale)
        assert status in OK, reply
        described = await wait_for(
            first, "/system/function/hello", lambda r: r.get("availableReplicas") == 2
        )
        assert described["replicas"] == 2
    finally:
        await stop_platform(first)

    second = await start_platform(tmp_path)
    try:
        described = await wait_for(
            second, "/system/function/hello", lambda r: r.get("availableReplicas") == 2
        )
        assert described["replicas"] == 2 and described["availableReplicas"] == 2
        # Older go-sdk: the namespace in the query instead.
        scale = {"serviceName": "hello", "replicas": 1}
        path = f"/system/scale-function/hello?namespace={DEFAULT}"
        status, reply = await send(second, "POST", path, scale, client="sdk")
        assert status in OK, reply
        missing = {"serviceName": "nope", "replicas": 1, "namespace": DEFAULT}
        status, reply = await send(second, "POST", "/system/scale-function/nope", missing)
        assert status == 404, reply  # "function nope not found"
    finally:
        await stop_platform(second)
