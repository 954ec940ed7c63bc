"""The OpenAPI document holds: a real platform serves it, documents every route it has, and
answers schemathesis's generated requests (valid and invalid) with documented statuses and
bodies, and never with a 5xx."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import jsonschema_rs
import pytest
import pytest_asyncio
import requests
import schemathesis
from schemathesis import APIOperation, Case, CheckFunction, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from faasd_py.gateway._openapi import spec
from tests.integration.conftest import Platform, start_platform, stop_platform

SCHEMA = schemathesis.openapi.from_dict(spec())
Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]


def _operations() -> list[Operation]:
    """The document's operations (tests/unit/test_openapi.py checks that every one loads)."""
    return [result.ok() for result in SCHEMA.get_all_operations() if isinstance(result, Ok)]


OPERATIONS = [pytest.param(operation, id=operation.label) for operation in _operations()]

# Cases per operation and generation mode: about 35 operations x 2 modes x this stays within a
# couple of minutes on a busy 2-core machine, and the seed makes every run send the same cases.
MAX_EXAMPLES = 25
SEED = 20_110

# What every answer must satisfy: no 5xx; the status, content type, headers and body the
# document gives for it; and /system/* refusing calls without (or with wrong) credentials.
# (Not schemathesis's judgement of which inputs the gateway should accept: it ignores unknown
# fields and query parameters, as OpenFaaS does.)
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]

# Seconds a single request may take before it counts as a hang (only catches hangs).
REQUEST_TIMEOUT = 30


async def test_the_gateway_serves_its_openapi_document(platform: Platform) -> None:
    async with platform.session.get(platform.url + "/openapi.json") as response:
        assert response.status == 200  # no credentials needed
        assert response.content_type == "application/json"
        assert await response.json() == spec()


async def test_every_route_of_the_gateway_is_documented(platform: Platform) -> None:
    router = platform.running.gateway.runner.app.router
    served = {
        (route.method, route.resource.canonical)
        for route in router.routes()
        if route.resource is not None
    }
    documented = {
        (method.upper(), path)
        for path, item in spec()["paths"].items()
        for method in item
        if method != "parameters"
    }
    # "*" routes (invocations) take any method: the document lists each one. aiohttp answers
    # HEAD wherever it answers GET; the document leaves those HEADs implied.
    any_method = {path for method, path in served if method == "*"}
    served = {(m, p) for m, p in served if m != "*" and not (m == "HEAD" and ("GET", p) in served)}
    assert {(m, p) for m, p in documented if p not in any_method} == served
    every_method = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
    for path in any_method:
        assert {m for m, p in documented if p == path} == every_method, path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    """One platform for every fuzzed operation: what one operation creates (namespaces,
    secrets) is there for the next, as it would be on a real gateway."""
    running = await start_platform(Path(tmp_path_factory.mktemp("openapi")))
    try:
        yield running
    finally:
        await stop_platform(running)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_generated_requests_get_documented_answers_and_no_5xx(
    fuzzed: Platform, operation: Operation
) -> None:
    # Schemathesis calls with requests (blocking): in a thread, so the gateway's loop serves.
    failures = await asyncio.to_thread(_fuzz, operation, fuzzed.url, fuzzed.auth)
    assert not failures, "\n\n".join(failures)


def _fuzz(operation: Operation, url: str, auth: dict[str, str]) -> list[str]:
    """Every distinct failure of the operation's generated cases (valid ones, then invalid
    ones), each with a curl to reproduce it."""
    found: dict[tuple[str, ...], str] = {}
    with requests.Session() as session:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            send = functools.partial(
                Case.call_and_validate,
                base_url=url,
                session=session,
                headers=auth,
                checks=CHECKS,
                timeout=REQUEST_TIMEOUT,
            )
            try:
                _generate(operation, mode, send, found)
            except hypothesis.errors.Unsatisfiable:
                # Nothing to make invalid: the operation takes no parameters and no body.
                assert mode is GenerationMode.NEGATIVE
    return list(found.values())


def _generate(
    operation: Operation,
    mode: GenerationMode,
    send: Callable[[AnyCase], object],
    found: dict[tuple[str, ...], str],
) -> None:
    @hypothesis.seed(SEED)
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        # Shrinking would resend many cases; the first failing one is reported as it is.
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: AnyCase) -> None:
        try:
            send(case)
        except FailureGroup as group:
            key = tuple(sorted(type(f).__name__ for f in group.exceptions))
            found.setdefault(key, f"[{mode.value}] {group}")

    run()


LOGGING_HELLO = """
def handle(event, context):
    print("called with", event.body.decode(), flush=True)
    return {"statusCode": 200, "body": "hello " + event.body.decode()}
"""


async def test_every_success_the_document_promises_is_what_the_gateway_sends(
    platform: Platform,
) -> None:
    """Generated cases rarely name what exists; this walk does, so each operation's 2xx (and
    its conflicts) are checked against the document too: a FunctionStatus with its keepAlive,
    log lines, an invocation's trace headers, created namespaces and secrets."""

    async def call(label: str, status: int, **case: Any) -> Response:
        operation = SCHEMA.find_operation_by_label(label)
        assert operation is not None, label
        if "body" in case:
            case.setdefault("media_type", "application/json")
        response = await asyncio.to_thread(
            operation.Case(**case).call_and_validate,
            base_url=platform.url,
            headers=platform.auth,
            checks=CHECKS,
            timeout=REQUEST_TIMEOUT,
        )
        assert response.status_code == status, (label, response.status_code, response.text)
        return response

    platform.build("hello:latest", LOGGING_HELLO)
    hello = {"service": "hello", "image": "hello:latest", "labels": {"team": "a"}}
    await call("POST /system/functions", 202, body=hello)
    await call("PUT /system/functions", 200, body=hello)
    invoked = await call("POST /function/{name}", 200, path_parameters={"name": "hello"}, body=b"x")
    assert invoked.content == b"hello x" and "server-timing" in invoked.headers
    await call(
        "GET /function/{name}/{path}",
        200,
        path_parameters={"name": "hello.openfaas-fn", "path": "deep/path"},
        query={"q": "1"},
    )
    listed = await call("GET /system/functions", 200)
    assert [f["name"] for f in listed.json()] == ["hello"]
    described = (await call("GET /system/function/{name}", 200, path_parameters=NAME)).json()
    assert described["invocationCount"] == 2 and "keepAlive" in described
    await call("POST /system/scale-function/{name}", 202, path_parameters=NAME, body=SCALE)

    logs = await call("GET /system/logs", 200, query={"name": "hello", "tail": 5})
    log_line = jsonschema_rs.validator_for(spec()["components"]["schemas"]["LogLine"])
    lines = [json.loads(line) for line in logs.text.splitlines()]
    assert any("called with x" in line["text"] for line in lines), lines
    for line in lines:
        log_line.validate(line)

    await call("POST /system/namespace/{name}", 201, path_parameters={"name": "staging"})
    await call("POST /system/namespace/{name}", 409, path_parameters={"name": "staging"})
    await call("GET /system/namespace/{name}", 200, path_parameters={"name": "staging"})
    await call(
        "PUT /system/namespace/{name}",
        202,
        path_parameters={"name": "staging"},
        body={"labels": {"env": "staging"}},
    )
    await call("POST /system/namespace/", 201, body={"name": "scratch"})
    assert (await call("GET /system/namespaces", 200)).json() == [
        "openfaas-fn",
        "scratch",
        "staging",
    ]
    await call("DELETE /system/namespace/{name}", 202, path_parameters={"name": "scratch"})

    secret = {"name": "api-key", "value": "s3cret", "namespace": "staging"}
    await call("POST /system/secrets", 201, body=secret)
    await call("POST /system/secrets", 409, body=secret)
    await call("PUT /system/secrets", 200, body={**secret, "rawValue": "bmV3"})
    await call("GET /system/secrets", 200, query={"namespace": "staging"})
    await call("DELETE /system/secrets", 200, body={"name": "api-key", "namespace": "staging"})

    for label in ("GET /system/info", "GET /healthz", "GET /metrics", "GET /openapi.json"):
        await call(label, 200)
    await call("DELETE /system/functions", 200, body={"functionName": "hello"})
    await call("DELETE /system/functions", 404, body={"functionName": "hello"})


NAME = {"name": "hello"}
SCALE = {"serviceName": "hello", "replicas": 1}
