"""The gateway's OpenAPI document is itself valid, and says what every error looks like."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from schemathesis.core.result import Ok

import faasd_py
from faasd_py.gateway._openapi import spec


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield method, path, operation


def test_the_document_is_valid_openapi() -> None:
    schema = schemathesis.openapi.from_dict(copy.deepcopy(spec()))
    schema.validate()
    # Every operation loads: its references resolve and its parameters make sense.
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results
    assert len(results) == len(list(_operations(spec())))


def test_the_validation_catches_a_broken_document() -> None:
    """The check above has teeth: OpenAPI 3 has no body parameters (Swagger 2 had)."""
    broken = copy.deepcopy(spec())
    broken["components"]["parameters"]["namespace"]["in"] = "body"
    with pytest.raises(jsonschema_rs.ValidationError, match="body"):
        schemathesis.openapi.from_dict(broken).validate()


def test_the_document_versions_with_the_package() -> None:
    assert spec()["info"]["version"] == faasd_py.__version__


def test_every_operation_has_a_unique_id() -> None:
    ids = [operation["operationId"] for _, _, operation in _operations(spec())]
    assert len(ids) == len(set(ids))


def test_every_error_answer_is_the_gateways_json_error() -> None:
    """Each documented 4xx and 5xx is {"error", "status"} (an invocation's may also be the
    function's own answer, passed through)."""
    responses = spec()["components"]["responses"]
    error = {"$ref": "#/components/schemas/Error"}
    statuses = itertools.chain.from_iterable(
        operation["responses"].items() for _, _, operation in _operations(spec())
    )
    errors = [(s, answer) for s, answer in statuses if s != "default" and int(s) >= 400]
    for status, answer in errors:
        name = answer["$ref"].rsplit("/", 1)[-1]
        assert responses[name]["content"]["application/json"]["schema"] == error, (status, name)
    assert {s for s, _ in errors} >= {"400", "401", "404", "409", "413", "429", "500", "504"}


def test_system_routes_need_basic_auth_and_the_rest_none() -> None:
    assert spec()["components"]["securitySchemes"]["basicAuth"] == {
        "type": "http",
        "scheme": "basic",
        "description": spec()["components"]["securitySchemes"]["basicAuth"]["description"],
    }
    basic: list[dict[str, list[str]]] = [{"basicAuth": []}]
    for method, path, operation in _operations(spec()):
        security = operation.get("security", spec()["security"])
        assert security == (basic if path.startswith("/system/") else []), (method, path)
        if path.startswith("/system/"):
            assert "401" in operation["responses"], (method, path)


def test_every_operation_lists_the_answers_of_the_connection_limits() -> None:
    """Any route may meet a header time-out (408) or the connection cap (503), before the
    route itself is known (gateway/_connections.py)."""
    missing = [
        (method, path, status)
        for method, path, operation in _operations(spec())
        for status in ("408", "503")
        if status not in operation["responses"]
    ]
    assert missing == []
