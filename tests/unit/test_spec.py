"""Function specs: the REST FunctionDeployment JSON and stack.yml, validated into FunctionSpec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faasd_py.errors import BadRequest, SpecError
from faasd_py.spec import (
    DEFAULT_EXEC_TIMEOUT,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_SCALE_MAX,
    DEFAULT_SCALE_MIN,
    FunctionSpec,
    Resources,
    Stack,
    function_ref,
    load_stack,
    parse_deployment,
    parse_stack,
    qualified_name,
    split_ref,
    substitute_environment,
    validate_name,
    validate_secret_name,
)

FULL_DEPLOYMENT: dict[str, Any] = {
    "service": "hello",
    "image": "hello:latest",
    "namespace": "openfaas-fn",
    "envProcess": "python3 index.py",
    "envVars": {"write_debug": "true", "max_inflight": "4", "exec_timeout": "45s"},
    "constraints": ["node.platform.os == linux"],
    "secrets": ["api-key", "db.password"],
    "labels": {
        "com.openfaas.scale.min": "2",
        "com.openfaas.scale.max": "7",
        "com.faasd-py.app": "shop",
    },
    "annotations": {"topic": "orders"},
    "limits": {"memory": "128Mi", "cpu": "500m"},
    "requests": {"memory": "64Mi", "cpu": "0.25"},
    "readOnlyRootFilesystem": True,
}


def deployment(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"service": "hello", "image": "hello:latest"}
    body.update(overrides)
    return body


def spec_error(body: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_deployment(body)
    return info.value


# --- the FunctionDeployment JSON -----------------------------------------------------------------


def test_a_full_deployment_is_read_field_by_field() -> None:
    spec = parse_deployment(FULL_DEPLOYMENT)
    assert spec.service == "hello"
    assert spec.image == "hello:latest"
    assert spec.env_process == "python3 index.py"
    assert spec.env_vars["write_debug"] == "true"
    assert spec.constraints == ("node.platform.os == linux",)
    assert spec.secrets == ("api-key", "db.password")
    assert spec.annotations == {"topic": "orders"}
    assert spec.limits == Resources(memory="128Mi", cpu="500m")
    assert spec.limits.memory_bytes == 128 * 2**20
    assert spec.limits.cpu_cores == pytest.approx(0.5)
    assert spec.requests.memory_bytes == 64 * 2**20
    assert spec.requests.cpu_cores == pytest.approx(0.25)
    assert spec.read_only_root_filesystem is True
    assert (spec.scale_min, spec.scale_max) == (2, 7)
    assert spec.max_inflight == 4
    assert spec.exec_timeout == 45.0
    assert spec.app == "shop"


def test_a_full_deployment_round_trips_through_to_json() -> None:
    spec = parse_deployment(FULL_DEPLOYMENT)
    assert spec.to_json() == FULL_DEPLOYMENT
    # Through real JSON text too, as the registry and the REST API carry it.
    again = parse_deployment(json.loads(json.dumps(spec.to_json())))
    assert again == spec


def test_a_minimal_deployment_gets_the_documented_defaults() -> None:
    spec = parse_deployment(deployment())
    assert spec.namespace == "openfaas-fn"
    assert spec.env_vars == {}
    assert spec.secrets == ()
    assert spec.limits == Resources()
    assert spec.limits.memory_bytes is None
    assert spec.limits.cpu_cores is None
    assert spec.read_only_root_filesystem is False
    assert spec.scale_min == DEFAULT_SCALE_MIN
    assert spec.scale_max == DEFAULT_SCALE_MAX
    assert spec.max_inflight == DEFAULT_MAX_INFLIGHT
    assert spec.exec_timeout == DEFAULT_EXEC_TIMEOUT
    assert spec.app == "hello"
    assert parse_deployment(spec.to_json()) == spec


def test_nulls_mean_defaults_as_the_openfaas_cli_sends_them() -> None:
    body = deployment(
        namespace="",
        envProcess=None,
        envVars=None,
        constraints=None,
        secrets=None,
        labels=None,
        annotations=None,
        limits=None,
        requests={"memory": "", "cpu": ""},
        readOnlyRootFilesystem=None,
    )
    assert parse_deployment(body) == parse_deployment(deployment())


def test_unknown_fields_are_ignored() -> None:
    body = deployment(
        registryAuth="dXNlcjpwYXNz",
        network="func_functions",
        futureField={"nested": [1, 2, 3]},
        limits={"memory": "128Mi", "gpu": "1"},
    )
    spec = parse_deployment(body)
    assert spec == parse_deployment(deployment(limits={"memory": "128Mi"}))
    assert "registryAuth" not in spec.to_json()


def test_the_image_is_trimmed() -> None:
    assert parse_deployment(deployment(image="  hello:latest \n")).image == "hello:latest"


def test_memory_given_as_a_number_of_bytes_is_kept_as_a_quantity() -> None:
    spec = parse_deployment(deployment(limits={"memory": 256 * 2**20, "cpu": 2}))
    assert spec.limits.memory_bytes == 256 * 2**20
    assert spec.limits.cpu_cores == 2.0
    assert parse_deployment(json.loads(json.dumps(spec.to_json()))) == spec


@pytest.mark.parametrize(
    ("override", "field", "phrase"),
    [
        ({"envVars": {"DEBUG": True}}, "envVars.DEBUG", "expected a string, got a boolean"),
        ({"envVars": {"PORT": 8080}}, "envVars.PORT", "expected a string, got a number"),
        ({"envVars": ["A=1"]}, "envVars", "expected a map of strings, got a list"),
        ({"labels": ["a", "b"]}, "labels", "expected a map of strings, got a list"),
        ({"labels": {"tier": None}}, "labels.tier", "expected a string, got null"),
        ({"annotations": "x"}, "annotations", "expected a map of strings, got a string"),
        ({"limits": {"memory": "lots"}}, "limits.memory", "expected a size such as 128Mi"),
        ({"limits": {"memory": "512Ki"}}, "limits.memory", "below the minimum of 1Mi"),
        ({"limits": {"memory": True}}, "limits.memory", "expected a quantity such as '128Mi'"),
        ({"limits": {"cpu": "fast"}}, "limits.cpu", "expected a CPU quantity"),
        ({"limits": {"cpu": "0"}}, "limits.cpu", "must be positive"),
        ({"requests": {"memory": "1Zi"}}, "requests.memory", "unknown size suffix"),
        ({"requests": "128Mi"}, "requests", "expected an object with 'memory' and/or 'cpu'"),
        ({"secrets": "api-key"}, "secrets", "expected a list of strings"),
        ({"secrets": [1, 2]}, "secrets", "expected a list of strings"),
        ({"secrets": ["../etc/passwd"]}, "secrets", "not a valid secret name"),
        ({"secrets": [""]}, "secrets", "a secret name is required"),
        ({"constraints": "linux"}, "constraints", "expected a list of strings"),
        ({"readOnlyRootFilesystem": "yes"}, "readOnlyRootFilesystem", "expected true or false"),
        ({"readOnlyRootFilesystem": 1}, "readOnlyRootFilesystem", "expected true or false"),
        ({"envProcess": ["python3"]}, "envProcess", "expected a string, got a list"),
        ({"namespace": 7}, "namespace", "expected a string, got a number"),
    ],
)
def test_fields_of_the_wrong_type_are_rejected_naming_the_field(
    override: dict[str, Any], field: str, phrase: str
) -> None:
    error = spec_error(deployment(**override))
    assert error.field == field
    assert phrase in error.message
    # The message a user sees starts with the field it is about.
    assert str(error).startswith(f"{field}: ")
    # Every spec error is a 400 to the REST API.
    assert isinstance(error, BadRequest)
    assert error.status == 400


@pytest.mark.parametrize("body", [None, [], "hello", 42])
def test_a_body_that_is_not_an_object_is_rejected(body: object) -> None:
    error = spec_error(body)
    assert error.field == "body"
    assert "expected a JSON object" in error.message


@pytest.mark.parametrize("image", [None, "", "   ", 3, ["hello"]])
def test_the_image_is_required(image: object) -> None:
    body = deployment()
    if image is None:
        del body["image"]
    else:
        body["image"] = image
    error = spec_error(body)
    assert error.field == "image"
    assert "non-empty string is required" in error.message


@pytest.mark.parametrize("service", [None, "", 5])
def test_the_service_name_is_required(service: object) -> None:
    body = deployment()
    if service is None:
        del body["service"]
    else:
        body["service"] = service
    error = spec_error(body)
    assert error.field == "service"
    assert "a function name is required" in error.message


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "A",
        "Hello",
        "-a",
        "a-",
        "a_b",
        "a.b",
        "a/b",
        "hello world",
        "héllo",
        "a" * 64,
        "a" * 1000,
    ],
)
def test_names_that_are_not_dns1123_labels_are_rejected(name: str) -> None:
    error = spec_error(deployment(service=name))
    assert error.field == "service"
    assert "is not a valid function name" in error.message
    assert "at most 63 lower-case letters, digits and '-'" in error.message
    # The name is quoted back, but never at full length.
    assert len(error.message) < 300


@pytest.mark.parametrize("name", ["a", "0", "hello", "hello-world", "a1-b2", "9lives", "a" * 63])
def test_dns1123_labels_are_accepted(name: str) -> None:
    assert parse_deployment(deployment(service=name)).service == name


@given(st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True))
def test_every_dns1123_label_is_a_valid_name(name: str) -> None:
    assert validate_name(name) == name


# Newlines are left out here: test_a_trailing_newline_is_not_part_of_a_valid_name covers them.
@given(st.text(st.characters(exclude_characters="\n"), max_size=70))
def test_an_accepted_name_is_safe_in_a_path_and_a_url(name: str) -> None:
    try:
        validate_name(name)
    except SpecError:
        return
    assert 1 <= len(name) <= 63
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert not name.startswith("-")
    assert not name.endswith("-")


@pytest.mark.parametrize("name", ["hello\n", "a" * 62 + "\n"])
def test_a_trailing_newline_is_not_part_of_a_valid_name(name: str) -> None:
    with pytest.raises(SpecError):
        validate_name(name)
    with pytest.raises(SpecError):
        validate_secret_name(name)


@pytest.mark.parametrize("namespace", ["default", "dev", "kube-system"])
def test_a_function_lives_in_the_namespace_it_names(namespace: str) -> None:
    spec = parse_deployment(deployment(service="hello", namespace=namespace))
    assert spec.namespace == namespace
    assert spec.ref == f"hello.{namespace}"
    assert qualified_name(spec.ref) == f"hello.{namespace}"
    assert split_ref(spec.ref) == ("hello", namespace)


def test_the_default_namespace_keeps_the_plain_name_as_its_ref() -> None:
    spec = parse_deployment(deployment(service="hello"))
    assert (spec.namespace, spec.ref, spec.app) == ("openfaas-fn", "hello", "hello")
    assert qualified_name("hello") == "hello.openfaas-fn"
    assert split_ref("hello.openfaas-fn") == ("hello", "openfaas-fn")
    assert function_ref(*split_ref("hello.openfaas-fn")) == "hello"


def test_apps_are_per_namespace() -> None:
    labels = {"com.faasd-py.app": "shop"}
    assert parse_deployment(deployment(labels=labels)).app == "shop"
    assert parse_deployment(deployment(labels=labels, namespace="dev")).app == "shop.dev"


@pytest.mark.parametrize("namespace", ["Dev", "a.b", "-x", "x" * 64, "dev_1"])
def test_a_malformed_namespace_is_refused_by_name(namespace: str) -> None:
    error = spec_error(deployment(namespace=namespace))
    assert error.field == "namespace"
    assert "not a valid namespace" in error.message


@pytest.mark.parametrize("app", ["shop.eu", "Shop", "a b"])
def test_an_app_label_must_be_a_dns_label(app: str) -> None:
    error = spec_error(deployment(labels={"com.faasd-py.app": app}))
    assert error.field == "labels.com.faasd-py.app"


@pytest.mark.parametrize("name", ["api-key", "db.password", "TOKEN_1", "a"])
def test_secret_names_with_dots_underscores_and_capitals_are_accepted(name: str) -> None:
    assert parse_deployment(deployment(secrets=[name])).secrets == (name,)


# --- scaling, concurrency and timeout settings ---------------------------------------------------


def scale_labels(low: str | None = None, high: str | None = None) -> dict[str, str]:
    labels = {}
    if low is not None:
        labels["com.openfaas.scale.min"] = low
    if high is not None:
        labels["com.openfaas.scale.max"] = high
    return labels


def test_scale_labels_set_the_bounds() -> None:
    spec = parse_deployment(deployment(labels=scale_labels("0", "10")))
    assert (spec.scale_min, spec.scale_max) == (0, 10)


def test_empty_scale_labels_mean_the_defaults() -> None:
    spec = parse_deployment(deployment(labels=scale_labels("", "")))
    assert (spec.scale_min, spec.scale_max) == (DEFAULT_SCALE_MIN, DEFAULT_SCALE_MAX)


def test_a_scale_minimum_above_the_maximum_is_rejected_at_deploy() -> None:
    error = spec_error(deployment(labels=scale_labels("5", "2")))
    assert "com.openfaas.scale.min" in error.field
    assert "must not exceed com.openfaas.scale.max (5 > 2)" in error.message


def test_a_scale_minimum_above_the_default_maximum_is_rejected() -> None:
    error = spec_error(deployment(labels=scale_labels(str(DEFAULT_SCALE_MAX + 1))))
    assert "must not exceed" in error.message


@pytest.mark.parametrize(
    ("labels", "key", "phrase"),
    [
        (scale_labels("-1"), "com.openfaas.scale.min", "at least 0, got -1"),
        (scale_labels(high="0"), "com.openfaas.scale.max", "at least 1, got 0"),
        (scale_labels("one"), "com.openfaas.scale.min", "expected a whole number, got 'one'"),
        (scale_labels(high="2.5"), "com.openfaas.scale.max", "expected a whole number, got '2.5'"),
    ],
)
def test_bad_scale_labels_are_rejected_at_deploy(
    labels: dict[str, str], key: str, phrase: str
) -> None:
    error = spec_error(deployment(labels=labels))
    assert key in error.field
    assert phrase in error.message


@given(low=st.integers(min_value=0, max_value=100), high=st.integers(min_value=1, max_value=100))
def test_scale_bounds_are_accepted_exactly_when_ordered(low: int, high: int) -> None:
    body = deployment(labels=scale_labels(str(low), str(high)))
    if low <= high:
        spec = parse_deployment(body)
        assert (spec.scale_min, spec.scale_max) == (low, high)
    else:
        with pytest.raises(SpecError, match="must not exceed"):
            parse_deployment(body)


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ("0", "at least 1, got 0"),
        ("-3", "at least 1, got -3"),
        ("many", "expected a whole number, got 'many'"),
        ("1.5", "expected a whole number, got '1.5'"),
    ],
)
def test_bad_max_inflight_is_rejected_at_deploy(value: str, phrase: str) -> None:
    error = spec_error(deployment(envVars={"max_inflight": value}))
    assert "max_inflight" in error.field
    assert phrase in error.message


@pytest.mark.parametrize(("value", "seconds"), [("10s", 10.0), ("1m30s", 90.0), ("2.5", 2.5)])
def test_exec_timeout_is_a_duration(value: str, seconds: float) -> None:
    assert parse_deployment(deployment(envVars={"exec_timeout": value})).exec_timeout == seconds


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ("0", "expected a positive duration"),
        ("0s", "expected a positive duration"),
        ("-5", "must not be negative"),
        ("forever", "expected a duration such as 30s"),
        ("10 seconds", "expected a duration such as 30s"),
    ],
)
def test_bad_exec_timeout_is_rejected_at_deploy(value: str, phrase: str) -> None:
    error = spec_error(deployment(envVars={"exec_timeout": value}))
    assert error.field == "envVars.exec_timeout"
    assert phrase in error.message


@pytest.mark.parametrize("value", ["nan", "inf", "1e999"])
def test_a_non_finite_exec_timeout_is_rejected_at_deploy(value: str) -> None:
    error = spec_error(deployment(envVars={"exec_timeout": value}))
    assert error.field == "envVars.exec_timeout"
    assert "expected a finite duration" in error.message


@pytest.mark.parametrize("value", ["nan", "inf", "infm"])
def test_a_non_finite_cpu_limit_is_rejected_at_deploy(value: str) -> None:
    error = spec_error(deployment(limits={"cpu": value}))
    assert error.field == "limits.cpu"
    assert "expected a finite CPU quantity" in error.message


def test_app_label_groups_functions_into_an_app() -> None:
    a = parse_deployment(deployment(service="cart", labels={"com.faasd-py.app": "shop"}))
    b = parse_deployment(deployment(service="pay", labels={"com.faasd-py.app": "shop"}))
    c = parse_deployment(deployment(service="blog", labels={"com.faasd-py.app": ""}))
    assert a.app == b.app == "shop"
    assert c.app == "blog"


# --- round trips of any valid spec ---------------------------------------------------------------

_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
_secret_names = st.from_regex(r"[a-zA-Z0-9]([-._a-zA-Z0-9]{0,20}[a-zA-Z0-9])?", fullmatch=True)
_plain_keys = st.text(st.characters(categories=("L", "N"), exclude_characters="\n"), min_size=1)
_values = st.text(max_size=30)
_quantities = st.one_of(
    st.none(),
    st.builds(lambda n, u: f"{n}{u}", st.integers(2, 4096), st.sampled_from(["Mi", "Gi", "M"])),
)
_cpus = st.one_of(
    st.none(),
    st.builds(lambda n: f"{n}m", st.integers(1, 8000)),
    st.builds(str, st.integers(1, 64)),
)


@st.composite
def valid_specs(draw: st.DrawFn) -> FunctionSpec:
    env = draw(st.dictionaries(_plain_keys, _values, max_size=4))
    labels = draw(st.dictionaries(_plain_keys, _values, max_size=4))
    return FunctionSpec(
        service=draw(_names),
        image=draw(st.from_regex(r"[a-z0-9][a-z0-9.:/_-]{0,30}", fullmatch=True)),
        env_process=draw(_values),
        env_vars=env,
        constraints=tuple(draw(st.lists(_values, max_size=3))),
        secrets=tuple(draw(st.lists(_secret_names, max_size=3))),
        labels=labels,
        annotations=draw(st.dictionaries(st.text(min_size=1), _values, max_size=3)),
        limits=Resources(memory=draw(_quantities), cpu=draw(_cpus)),
        requests=Resources(memory=draw(_quantities), cpu=draw(_cpus)),
        read_only_root_filesystem=draw(st.booleans()),
    )


@given(valid_specs())
def test_any_valid_spec_round_trips_through_its_json(spec: FunctionSpec) -> None:
    text = json.dumps(spec.to_json())
    assert parse_deployment(json.loads(text)) == spec


# --- stack.yml -----------------------------------------------------------------------------------

STACK = """\
version: 1.0
provider:
  name: openfaas
  gateway: http://127.0.0.1:8080
functions:
  hello:
    lang: python3-http
    handler: ./hello
    image: hello:latest
    environment:
      write_debug: true
      max_inflight: 3
      ratio: 0.5
      greeting: hi
    labels:
      com.openfaas.scale.min: 0
      com.openfaas.scale.max: 4
    annotations:
      owner: team-a
    limits:
      memory: 128Mi
      cpu: 500m
    secrets:
      - api-key
    readonly_root_filesystem: true
  classic:
    lang: python3
    handler: funcs/classic
    image: classic:0.1
"""


def stack_error(text: str, tmp_path: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_stack(text, tmp_path)
    return info.value


def one_function(body: str) -> str:
    """A stack with one function `hello` whose settings are `body` (indented YAML lines)."""
    return "functions:\n  hello:\n" + "".join(f"    {line}\n" for line in body.splitlines())


MINIMAL = "lang: python3-http\nhandler: ./hello\nimage: hello:latest"


def test_a_stack_file_gives_every_function_its_spec_and_handler(tmp_path: Path) -> None:
    stack = parse_stack(STACK, tmp_path)
    assert stack.gateway == "http://127.0.0.1:8080"
    hello, classic = stack.functions
    assert hello.lang == "python3-http"
    assert hello.handler == (tmp_path / "hello").resolve()
    assert classic.handler == (tmp_path / "funcs" / "classic").resolve()
    assert classic.lang == "python3"
    spec = hello.spec
    assert spec.service == "hello"
    assert spec.image == "hello:latest"
    assert spec.limits.memory_bytes == 128 * 2**20
    assert spec.limits.cpu_cores == pytest.approx(0.5)
    assert spec.secrets == ("api-key",)
    assert spec.annotations == {"owner": "team-a"}
    assert spec.read_only_root_filesystem is True
    assert (spec.scale_min, spec.scale_max) == (0, 4)
    assert spec.max_inflight == 3
    # What the REST API would store for it parses back to the same spec.
    assert parse_deployment(spec.to_json()) == spec


def test_environment_scalars_reach_the_function_as_their_text(tmp_path: Path) -> None:
    env = parse_stack(STACK, tmp_path).functions[0].spec.env_vars
    assert env == {"write_debug": "true", "max_inflight": "3", "ratio": "0.5", "greeting": "hi"}


def test_labels_scalars_reach_the_function_as_their_text(tmp_path: Path) -> None:
    labels = parse_stack(STACK, tmp_path).functions[0].spec.labels
    assert labels == {"com.openfaas.scale.min": "0", "com.openfaas.scale.max": "4"}


# Scalars that YAML 1.1 (PyYAML's SafeLoader) would retype, and that faas-cli (Go's YAML, string
# fields) keeps as written: a version, a time of day (base 60 in YAML 1.1), a number with a
# leading zero (octal), a YAML 1.1 boolean, and a few more of the same kind.
AS_WRITTEN = [
    "1.10",
    "10:30",
    "017",
    "off",
    "no",
    "Yes",
    "0x1F",
    "1e3",
    "1_000",
    "2001-12-14",
    ".5",
]


@pytest.mark.parametrize("text", AS_WRITTEN)
@pytest.mark.parametrize("section", ["environment", "labels", "annotations"])
def test_stack_scalars_keep_their_text_as_written(section: str, text: str, tmp_path: Path) -> None:
    stack = parse_stack(one_function(f"{MINIMAL}\n{section}:\n  v: {text}"), tmp_path)
    spec = stack.functions[0].spec
    found = {"environment": spec.env_vars, "labels": spec.labels, "annotations": spec.annotations}
    assert found[section] == {"v": text}


@pytest.mark.parametrize("text", AS_WRITTEN)
def test_environment_file_scalars_keep_their_text_as_written(text: str, tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text(f"environment:\n  v: {text}\n")
    stack = parse_stack(one_function(MINIMAL + "\nenvironment_file: [env.yml]"), tmp_path)
    assert stack.functions[0].spec.env_vars == {"v": text}


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ('"1.10"', "1.10"),
        ("'10:30'", "10:30"),
        ('"017"', "017"),
        ("'off'", "off"),
        ('"null"', "null"),
        ("''", ""),
        ('"a: b"', "a: b"),
        ("|\n    two\n    lines", "two\nlines\n"),
    ],
)
def test_quoted_stack_values_are_their_content(written: str, value: str, tmp_path: Path) -> None:
    stack = parse_stack(one_function(f"{MINIMAL}\nenvironment:\n  v: {written}"), tmp_path)
    assert stack.functions[0].spec.env_vars == {"v": value}


@pytest.mark.parametrize("written", ["", " null", " ~"])
def test_an_empty_stack_value_is_the_empty_string_as_in_faas_cli(
    written: str, tmp_path: Path
) -> None:
    text = one_function(f"{MINIMAL}\nenvironment:\n  v:{written}\nlabels:\n  l:{written}")
    spec = parse_stack(text, tmp_path).functions[0].spec
    assert (spec.env_vars, spec.labels) == ({"v": ""}, {"l": ""})


def test_other_string_fields_of_a_stack_keep_their_text(tmp_path: Path) -> None:
    body = "lang: python3-http\nhandler: ./017\nimage: tool:1.10\nsecrets: [017, 1.10]"
    stack = parse_stack(one_function(body + "\nfprocess: 10:30\nconstraints: [off]"), tmp_path)
    fn = stack.functions[0]
    assert fn.spec.image == "tool:1.10"
    assert fn.spec.secrets == ("017", "1.10")
    assert fn.spec.env_process == "10:30"
    assert fn.spec.constraints == ("off",)
    assert fn.handler == (tmp_path / "017").resolve()


def test_anchors_and_merge_keys_keep_the_text_too(tmp_path: Path) -> None:
    text = "x-common: &common\n  VERSION: 1.10\n  AT: 10:30\n" + one_function(
        f"{MINIMAL}\nenvironment:\n  <<: *common\n  MODE: off"
    )
    env = parse_stack(text, tmp_path).functions[0].spec.env_vars
    assert env == {"VERSION": "1.10", "AT": "10:30", "MODE": "off"}


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        ("labels:\n  com.openfaas.scale.min: 2\n  com.openfaas.scale.max: 010", "scale"),
        ("environment:\n  max_inflight: 4\n  exec_timeout: 1.5", "env"),
        ("limits:\n  cpu: 0.5\n  memory: 134217728", "limits"),
    ],
)
def test_numbers_where_settings_expect_numbers_still_work(
    extra: str, check: str, tmp_path: Path
) -> None:
    spec = parse_stack(one_function(MINIMAL + "\n" + extra), tmp_path).functions[0].spec
    if check == "scale":
        assert (spec.scale_min, spec.scale_max) == (2, 10)
    elif check == "env":
        assert (spec.max_inflight, spec.exec_timeout) == (4, 1.5)
    else:
        assert spec.limits.cpu_cores == pytest.approx(0.5)
        assert spec.limits.memory_bytes == 128 * 2**20


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("true", True),
        ("True", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_readonly_root_filesystem_reads_the_boolean_forms_faas_cli_reads(
    written: str, value: bool, tmp_path: Path
) -> None:
    text = one_function(f"{MINIMAL}\nreadonly_root_filesystem: {written}")
    assert parse_stack(text, tmp_path).functions[0].spec.read_only_root_filesystem is value


def test_the_namespace_of_a_stack_function_is_sent_with_it(tmp_path: Path) -> None:
    spec = parse_stack(one_function(MINIMAL + "\nnamespace: staging"), tmp_path).functions[0].spec
    assert spec.namespace == "staging"
    assert spec.to_json()["namespace"] == "staging"
    default = parse_stack(one_function(MINIMAL), tmp_path).functions[0].spec
    assert default.namespace == "openfaas-fn"


def test_load_stack_resolves_handlers_against_the_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "stack.yml").write_text(STACK)
    stack = load_stack(folder / "stack.yml")
    assert stack.functions[0].handler == (folder / "hello").resolve()


def test_load_stack_of_a_missing_file_says_it_cannot_read_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(SpecError) as info:
        load_stack(missing)
    assert info.value.field == str(missing)
    assert "cannot read the stack file" in info.value.message
    assert "No such file or directory" in info.value.message


def test_a_typo_in_a_function_key_is_refused_with_the_file_line_and_nearest_key(
    tmp_path: Path,
) -> None:
    # `limit:` for `limits:` used to deploy the function with no limits at all.
    (tmp_path / "stack.yml").write_text(one_function(MINIMAL + "\nlimit:\n  memory: 128Mi"))
    with pytest.raises(SpecError) as info:
        load_stack(tmp_path / "stack.yml")
    assert info.value.field == "functions.hello.limit"
    assert f"{tmp_path / 'stack.yml'}, line 6" in info.value.message
    assert "did you mean 'limits'?" in info.value.message


@pytest.mark.parametrize(
    ("text", "field", "line", "nearest"),
    [
        ("provider:\n  name: openfaas\n  gatway: http://x\n", "provider.gatway", 3, "gateway"),
        ("versoin: 1.0\n", "versoin", 1, "version"),
        (MINIMAL + "\nrequests:\n  memroy: 64Mi", "functions.hello.requests.memroy", 7, "memory"),
        (MINIMAL + "\nenviroment:\n  a: b", "functions.hello.enviroment", 6, "environment"),
    ],
)
def test_unknown_keys_of_the_top_level_provider_and_resources_are_refused(
    text: str, field: str, line: int, nearest: str, tmp_path: Path
) -> None:
    if text.startswith("lang"):
        text = one_function(text)
    elif "functions" not in text:
        text += one_function(MINIMAL)
    error = stack_error(text, tmp_path)
    assert error.field == field
    assert f"stack.yml, line {line}; did you mean {nearest!r}?" in error.message


def test_an_unknown_key_unlike_any_lists_the_known_ones(tmp_path: Path) -> None:
    error = stack_error(one_function(MINIMAL + "\nzzz: 1"), tmp_path)
    assert error.field == "functions.hello.zzz"
    assert "expected one of lang, handler, image" in error.message


def test_every_key_of_faas_clis_schema_and_x_extensions_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text("environment:\n  a: b\n")
    text = """\
version: 1.0
provider:
  name: openfaas
  gateway: http://127.0.0.1:8080
  network: func_functions
configuration:
  templates:
    - name: python3-http
  copy: [common]
x-defaults: &defaults
  lang: python3-http
  handler: ./hello
functions:
  hello:
    <<: *defaults
    image: hello:latest
    fprocess: python3 index.py
    environment: {write_debug: "true"}
    environment_file: [env.yml]
    secrets: [api-key]
    labels: {team: a}
    annotations: {owner: b}
    limits: {memory: 128Mi, cpu: 500m}
    requests: {memory: 64Mi, cpu: 100m}
    constraints: ["node.platform.os == linux"]
    namespace: openfaas-fn
    readonly_root_filesystem: true
    skip_build: false
    build_options: [dev]
    build_args: {PIP_INDEX: x}
    build_secrets: {token: t}
    platforms: linux/amd64
    registry_auth: abc
    tls_skip_verify: true
    x-notes: kept for a tool of ours
"""
    spec = parse_stack(text, tmp_path).functions[0].spec
    assert spec.limits == Resources(memory="128Mi", cpu="500m")
    assert spec.env_vars == {"a": "b", "write_debug": "true"}


def test_a_stack_without_provider_has_no_gateway(tmp_path: Path) -> None:
    assert parse_stack(one_function(MINIMAL), tmp_path).gateway is None


@pytest.mark.parametrize("text", ["functions: [\n", "functions:\n  hello: {lang: [}\n", "\t- x"])
def test_malformed_yaml_is_rejected(text: str, tmp_path: Path) -> None:
    error = stack_error(text, tmp_path)
    assert error.field == "stack.yml"
    assert "not valid YAML" in error.message


@pytest.mark.parametrize("text", ["", "just text", "- a\n- b\n", "42"])
def test_a_stack_that_is_not_a_mapping_is_rejected(text: str, tmp_path: Path) -> None:
    error = stack_error(text, tmp_path)
    assert error.field == "stack.yml"
    assert "expected a YAML mapping with 'provider' and 'functions'" in error.message


@pytest.mark.parametrize(
    "text",
    ["provider:\n  name: openfaas\n", "functions:\n", "functions: {}\n", "functions: [hello]\n"],
)
def test_a_stack_without_functions_is_rejected(text: str, tmp_path: Path) -> None:
    error = stack_error(text, tmp_path)
    assert error.field == "functions"
    assert "expected a mapping of function names to their settings" in error.message


def test_a_provider_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    error = stack_error("provider: openfaas\n" + one_function(MINIMAL), tmp_path)
    assert error.field == "provider"


def test_a_gateway_that_is_not_a_string_is_rejected(tmp_path: Path) -> None:
    error = stack_error("provider:\n  gateway: [1]\n" + one_function(MINIMAL), tmp_path)
    assert error.field == "provider.gateway"
    assert "expected a URL" in error.message


@pytest.mark.parametrize("lang", ["go", "node18", "python", "dockerfile"])
def test_an_unsupported_lang_is_rejected_naming_the_supported_ones(
    lang: str, tmp_path: Path
) -> None:
    error = stack_error(one_function(f"lang: {lang}\nhandler: ./hello\nimage: x"), tmp_path)
    assert error.field == "functions.hello.lang"
    assert "expected one of python3-http, python3" in error.message
    assert repr(lang) in error.message


def test_a_missing_lang_is_rejected(tmp_path: Path) -> None:
    error = stack_error(one_function("handler: ./hello\nimage: x"), tmp_path)
    assert error.field == "functions.hello.lang"
    assert "missing" in error.message


@pytest.mark.parametrize("handler", [None, "''", "[a]"])
def test_a_missing_handler_is_rejected(handler: str | None, tmp_path: Path) -> None:
    body = "lang: python3-http\nimage: hello:latest"
    if handler is not None:
        body += f"\nhandler: {handler}"
    error = stack_error(one_function(body), tmp_path)
    assert error.field == "functions.hello.handler"
    assert "expected the path of the handler's folder" in error.message


def test_a_missing_image_is_rejected(tmp_path: Path) -> None:
    error = stack_error(one_function("lang: python3-http\nhandler: ./hello"), tmp_path)
    assert error.field == "functions.hello.image"
    assert "expected a package name" in error.message


def test_a_function_body_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    error = stack_error("functions:\n  hello: python3-http\n", tmp_path)
    assert error.field == "functions.hello"
    assert "expected a mapping with lang, handler and image" in error.message


@pytest.mark.parametrize("name", ["Hello", "my_func", "-x"])
def test_a_function_name_that_is_not_a_dns1123_label_is_rejected(name: str, tmp_path: Path) -> None:
    error = stack_error(f"functions:\n  '{name}':\n    lang: python3\n", tmp_path)
    assert error.field == "functions"
    assert f"{name!r} is not a valid function name" in error.message


@pytest.mark.parametrize(
    ("extra", "field", "phrase"),
    [
        ("limits:\n  memory: lots", "functions.hello.limits.memory", "expected a size"),
        ("requests:\n  cpu: fast", "functions.hello.requests.cpu", "expected a CPU quantity"),
        ("secrets: api-key", "functions.hello.secrets", "expected a list of strings"),
        ("readonly_root_filesystem: maybe", "hello.readonly_root_filesystem", "true or false"),
        ("environment: [A=1]", "functions.hello.environment", "expected a map of strings"),
        ("environment:\n  A: [1, 2]", "functions.hello.environment.A", "expected a string"),
        ("environment:\n  A: {b: c}", "functions.hello.environment.A", "got an object"),
        ("fprocess: [a]", "functions.hello.fprocess", "expected a string"),
        ("labels: [a]", "functions.hello.labels", "expected a map of strings"),
        ("environment:\n  exec_timeout: soon", "exec_timeout", "expected a duration"),
        ("environment:\n  max_inflight: 0", "max_inflight", "at least 1"),
        ("labels:\n  com.openfaas.scale.min: 9", "com.openfaas.scale.min", "must not exceed"),
    ],
)
def test_a_bad_setting_in_a_stack_names_the_function_and_the_field(
    extra: str, field: str, phrase: str, tmp_path: Path
) -> None:
    error = stack_error(one_function(MINIMAL + "\n" + extra), tmp_path)
    assert error.field.startswith("functions.hello.")
    assert field in error.field
    assert phrase in error.message
    # The message names the field once, not twice ("a.b: a.b: ...").
    assert str(error).count(error.field) == 1


# --- environment variables in the stack file, substituted as faas-cli substitutes them ------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${OWNER}/fn:latest", "alex/fn:latest"),
        ("${OWNER:-docker}/fn", "alex/fn"),
        ("${UNSET:-docker}/fn", "docker/fn"),
        ("${EMPTY:-docker}/fn", "docker/fn"),
        ("${UNSET-x} ${UNSET=y} ${UNSET:=z}", "x y z"),
        ("${UNSET}", ""),
        ("$OWNER and $$OWNER stay", "$OWNER and $$OWNER stay"),
        ("$${OWNER} is escaped", "${OWNER} is escaped"),
        ("a ${OWNER^^} function is left as written", "a ${OWNER^^} function is left as written"),
    ],
)
def test_substitute_environment_as_faas_cli_does(text: str, expected: str) -> None:
    assert substitute_environment(text, {"OWNER": "alex", "EMPTY": ""}) == expected


def test_load_stack_substitutes_the_environment_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY", "registry.local:5000")
    monkeypatch.setenv("TAG", "1.10")
    monkeypatch.delenv("MODE", raising=False)
    (tmp_path / "stack.yml").write_text(
        "functions:\n  hello:\n    lang: python3-http\n    handler: ./hello\n"
        "    image: ${REGISTRY}/hello:${TAG}\n"
        "    environment: {TAG: ${TAG}, MODE: ${MODE:-off}}\n"
    )
    spec = load_stack(tmp_path / "stack.yml").functions[0].spec
    assert spec.image == "registry.local:5000/hello:1.10"
    assert spec.env_vars == {"TAG": "1.10", "MODE": "off"}


# --- environment_file ----------------------------------------------------------------------------


def test_environment_files_merge_in_order_and_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "base.yml").write_text("environment:\n  A: base\n  B: base\n  C: base\n  N: 7\n")
    (tmp_path / "prod.yml").write_text("environment:\n  B: prod\n  C: prod\n  FLAG: true\n")
    text = one_function(
        MINIMAL + "\nenvironment_file:\n  - base.yml\n  - prod.yml\nenvironment:\n  C: inline"
    )
    env = parse_stack(text, tmp_path).functions[0].spec.env_vars
    assert env == {"A": "base", "B": "prod", "C": "inline", "N": "7", "FLAG": "true"}


def test_environment_files_resolve_against_the_stack_folder(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "env.yml").write_text("environment:\n  WHERE: conf\n")
    (tmp_path / "stack.yml").write_text(
        one_function(MINIMAL + "\nenvironment_file: [conf/env.yml]")
    )
    stack = load_stack(tmp_path / "stack.yml")
    assert stack.functions[0].spec.env_vars == {"WHERE": "conf"}


def test_a_missing_environment_file_is_rejected(tmp_path: Path) -> None:
    error = stack_error(one_function(MINIMAL + "\nenvironment_file: [nope.yml]"), tmp_path)
    assert error.field == "functions.hello.environment_file"
    assert "cannot read" in error.message
    assert "nope.yml" in error.message


def test_an_environment_file_that_is_not_a_list_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text("environment:\n  A: b\n")
    error = stack_error(one_function(MINIMAL + "\nenvironment_file: env.yml"), tmp_path)
    assert error.field == "functions.hello.environment_file"
    assert "expected a list of YAML file paths" in error.message


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        ("A: b\n", "must hold a mapping with an 'environment' key"),
        ("- A\n", "must hold a mapping with an 'environment' key"),
        ("", "must hold a mapping with an 'environment' key"),
        ("environment: [\n", "is not valid YAML"),
    ],
)
def test_a_bad_environment_file_is_rejected(content: str, phrase: str, tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text(content)
    error = stack_error(one_function(MINIMAL + "\nenvironment_file: [env.yml]"), tmp_path)
    assert error.field == "functions.hello.environment_file"
    assert phrase in error.message
    assert "env.yml" in error.message


def test_a_bad_value_in_an_environment_file_names_the_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text("environment:\n  A: {nested: map}\n")
    error = stack_error(one_function(MINIMAL + "\nenvironment_file: [env.yml]"), tmp_path)
    assert "env.yml" in error.field
    assert error.field.endswith(".A")
    assert "expected a string, got an object" in error.message


def test_an_entry_of_environment_file_that_is_not_a_path_is_rejected(tmp_path: Path) -> None:
    error = stack_error(one_function(MINIMAL + "\nenvironment_file: [3]"), tmp_path)
    assert error.field == "functions.hello.environment_file"


# --- Stack.select --------------------------------------------------------------------------------


def test_select_with_no_names_gives_every_function(tmp_path: Path) -> None:
    stack = parse_stack(STACK, tmp_path)
    assert stack.select(()) == stack.functions


def test_select_gives_the_named_functions_in_the_order_asked(tmp_path: Path) -> None:
    stack = parse_stack(STACK, tmp_path)
    chosen = stack.select(("classic", "hello"))
    assert [f.spec.service for f in chosen] == ["classic", "hello"]


def test_select_of_an_unknown_name_names_every_missing_one(tmp_path: Path) -> None:
    stack: Stack = parse_stack(STACK, tmp_path)
    with pytest.raises(SpecError) as info:
        stack.select(("hello", "nope", "gone"))
    assert info.value.field == "functions"
    assert "not in the stack file: nope, gone" in info.value.message
