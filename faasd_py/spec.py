"""Function specs: OpenFaaS stack.yml and the REST FunctionDeployment JSON, into one FunctionSpec.

Both inputs validate into the same frozen `FunctionSpec`. Unknown fields of the JSON are ignored
(as the OpenFaaS gateway does, so newer clients keep working); unknown keys of a stack file are
refused with their line (a typo there would silently drop a setting). Fields of the wrong type
are rejected with a `SpecError` that names the field and says what it expected.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from faasd_py.config import CHANNELS, DEFAULT_BIN_WIDTH, live_policy
from faasd_py.errors import SpecError
from faasd_py.storage import BadQuotaAnnotation, Quota, quota_of
from faasd_py.units import parse_cpu, parse_duration, parse_size

DEFAULT_NAMESPACE = "openfaas-fn"
SUPPORTED_LANGS = ("python3-http", "python3")

# Labels and environment keys that tune the platform, named as OpenFaaS and of-watchdog name them.
LABEL_SCALE_MIN = "com.openfaas.scale.min"
LABEL_SCALE_MAX = "com.openfaas.scale.max"
LABEL_APP = "com.faasd-py.app"
ANNOTATION_CHANNEL = "com.faasd-py.channel"
# The keep-alive policy of the function's app (faasd_py.config.live_policy's forms).
ANNOTATION_POLICY = "com.faasd-py.policy"
ENV_MAX_INFLIGHT = "max_inflight"
ENV_EXEC_TIMEOUT = "exec_timeout"

DEFAULT_SCALE_MIN = 1
DEFAULT_SCALE_MAX = 5
DEFAULT_MAX_INFLIGHT = 1
DEFAULT_EXEC_TIMEOUT = 30.0

# OpenFaaS's rule for function names: a DNS-1123 label.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SECRET_NAME = re.compile(r"[a-zA-Z0-9]([-._a-zA-Z0-9]*[a-zA-Z0-9])?")


def validate_name(name: object, field_name: str = "service") -> str:
    """A function name: a DNS-1123 label, at most 63 characters (OpenFaaS's rule)."""
    return _dns_label(name, field_name, "function name", "hello")


def validate_namespace(namespace: object, field_name: str = "namespace") -> str:
    """A namespace name: a DNS-1123 label, as faasd and Kubernetes name namespaces."""
    return _dns_label(namespace, field_name, "namespace", DEFAULT_NAMESPACE)


def _dns_label(value: object, field_name: str, what: str, example: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(field_name, f"a {what} is required (a DNS-1123 label such as {example!r})")
    if len(value) > 63 or not _DNS1123_LABEL.fullmatch(value):
        raise SpecError(
            field_name,
            f"{value[:80]!r} is not a valid {what}: use at most 63 lower-case letters, "
            "digits and '-', starting and ending with a letter or digit",
        )
    return value


# --- how functions and apps are named across namespaces ---------------------------------------
#
# The worker, the logs and the keep-alive state name a function by its *ref*: NAME in the default
# namespace and NAME.NAMESPACE in any other, the way `/function/` paths name it. Names and
# namespaces are DNS labels (no dots), so a ref is unambiguous, and the refs of functions
# deployed before namespaces existed are unchanged. Apps are named the same way. Metrics always
# carry the full NAME.NAMESPACE, as the OpenFaaS gateway writes it.


def function_ref(name: str, namespace: str) -> str:
    return name if namespace == DEFAULT_NAMESPACE else f"{name}.{namespace}"


def split_ref(ref: str) -> tuple[str, str]:
    """(name, namespace) of a ref or of a NAME.NAMESPACE path segment."""
    name, _, namespace = ref.partition(".")
    return name, namespace or DEFAULT_NAMESPACE


def qualified_name(ref: str) -> str:
    """NAME.NAMESPACE: how OpenFaaS labels a function's metrics."""
    name, namespace = split_ref(ref)
    return f"{name}.{namespace}"


def validate_secret_name(name: object, field_name: str = "name") -> str:
    if not isinstance(name, str) or not name:
        raise SpecError(field_name, "a secret name is required")
    if len(name) > 253 or not _SECRET_NAME.fullmatch(name):
        raise SpecError(
            field_name,
            f"{name[:80]!r} is not a valid secret name: use letters, digits, '-', '.' and '_'",
        )
    return name


@dataclass(frozen=True)
class Resources:
    """Memory and CPU as written (Kubernetes quantities), with their parsed values."""

    memory: str | None = None
    cpu: str | None = None

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_size(self.memory)

    @property
    def cpu_cores(self) -> float | None:
        return None if self.cpu is None else parse_cpu(self.cpu)

    def to_json(self) -> dict[str, str]:
        out = {}
        if self.memory is not None:
            out["memory"] = self.memory
        if self.cpu is not None:
            out["cpu"] = self.cpu
        return out


@dataclass(frozen=True)
class FunctionSpec:
    """One deployed function, as the registry stores it and the worker runs it."""

    service: str
    image: str
    namespace: str = DEFAULT_NAMESPACE
    env_process: str = ""
    env_vars: Mapping[str, str] = field(default_factory=dict)
    constraints: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    limits: Resources = Resources()
    requests: Resources = Resources()
    read_only_root_filesystem: bool = False

    @property
    def ref(self) -> str:
        """How the worker names this function: NAME, or NAME.NAMESPACE outside the default."""
        return function_ref(self.service, self.namespace)

    @property
    def app(self) -> str:
        """The app this function belongs to: functions of one app share state and scheduling.
        Apps live in their function's namespace (named as refs are)."""
        return function_ref(self.labels.get(LABEL_APP) or self.service, self.namespace)

    @property
    def scale_min(self) -> int:
        return _int_setting(self.labels, "labels", LABEL_SCALE_MIN, DEFAULT_SCALE_MIN, minimum=0)

    @property
    def scale_min_label(self) -> int | None:
        """The floor the user asked for by label, or None when the label is absent (then
        the keep-alive policy decides, and without one the floor is DEFAULT_SCALE_MIN)."""
        if not self.labels.get(LABEL_SCALE_MIN):
            return None
        return self.scale_min

    @property
    def policy(self) -> str | None:
        """The keep-alive policy this function's app asks for (annotation
        com.faasd-py.policy), or None for the worker's --policy. SpecError for a malformed
        one; the worker checks it again with its bin width."""
        raw = self.annotations.get(ANNOTATION_POLICY)
        if raw is None or not raw.strip():
            return None
        try:
            live_policy(raw, DEFAULT_BIN_WIDTH)
        except ValueError as exc:
            raise SpecError(f"annotations.{ANNOTATION_POLICY}", str(exc)) from None
        return raw.strip()

    @property
    def scale_max(self) -> int:
        return _int_setting(self.labels, "labels", LABEL_SCALE_MAX, DEFAULT_SCALE_MAX, minimum=1)

    @property
    def max_inflight(self) -> int:
        return _int_setting(
            self.env_vars, "envVars", ENV_MAX_INFLIGHT, DEFAULT_MAX_INFLIGHT, minimum=1
        )

    @property
    def channel(self) -> str | None:
        """The channel this function asks for (annotation com.faasd-py.channel), or None for
        the worker's default."""
        raw = self.annotations.get(ANNOTATION_CHANNEL)
        if raw is None or not raw.strip():
            return None
        value = raw.strip().lower()
        field = f"annotations.{ANNOTATION_CHANNEL}"
        if value not in CHANNELS:
            raise SpecError(field, f"expected {', '.join(CHANNELS)}, got {raw!r}")
        return value

    @property
    def exec_timeout(self) -> float:
        raw = self.env_vars.get(ENV_EXEC_TIMEOUT)
        return DEFAULT_EXEC_TIMEOUT if raw is None else parse_duration(raw)

    def to_json(self) -> dict[str, Any]:
        """The OpenFaaS FunctionDeployment JSON of this spec (what `parse_deployment` reads)."""
        return {
            "service": self.service,
            "image": self.image,
            "namespace": self.namespace,
            "envProcess": self.env_process,
            "envVars": dict(self.env_vars),
            "constraints": list(self.constraints),
            "secrets": list(self.secrets),
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "limits": self.limits.to_json(),
            "requests": self.requests.to_json(),
            "readOnlyRootFilesystem": self.read_only_root_filesystem,
        }


def _int_setting(
    source: Mapping[str, str], where: str, key: str, default: int, minimum: int
) -> int:
    raw = source.get(key)
    if raw is None or raw == "":
        return default
    field = f"{where}.{key}"
    try:
        value = int(raw)
    except ValueError:
        raise SpecError(field, f"expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise SpecError(field, f"expected a whole number of at least {minimum}, got {value}")
    return value


# --- the FunctionDeployment JSON ---------------------------------------------------------------


def parse_deployment(body: object) -> FunctionSpec:
    """Validate an OpenFaaS FunctionDeployment (already decoded from JSON) into a FunctionSpec."""
    if not isinstance(body, dict):
        raise SpecError("body", "expected a JSON object (an OpenFaaS FunctionDeployment)")
    image = body.get("image")
    if not isinstance(image, str) or not image.strip():
        raise SpecError("image", "a non-empty string is required, e.g. 'hello:latest'")
    namespace = validate_namespace(_optional_str(body, "namespace") or DEFAULT_NAMESPACE)
    spec = FunctionSpec(
        service=validate_name(body.get("service")),
        image=image.strip(),
        namespace=namespace,
        env_process=_optional_str(body, "envProcess") or "",
        env_vars=_str_map(body.get("envVars"), "envVars"),
        constraints=_str_list(body.get("constraints"), "constraints"),
        secrets=tuple(
            validate_secret_name(s, "secrets") for s in _str_list(body.get("secrets"), "secrets")
        ),
        labels=_str_map(body.get("labels"), "labels"),
        annotations=_str_map(body.get("annotations"), "annotations"),
        limits=_resources(body.get("limits"), "limits"),
        requests=_resources(body.get("requests"), "requests"),
        read_only_root_filesystem=_optional_bool(body, "readOnlyRootFilesystem"),
    )
    check_settings(spec)
    return spec


def check_settings(spec: FunctionSpec) -> None:
    """Evaluate every derived setting once, so a bad label fails at deploy, not at invoke."""
    if spec.scale_min > spec.scale_max:
        raise SpecError(
            f"labels.{LABEL_SCALE_MIN}",
            f"must not exceed {LABEL_SCALE_MAX} ({spec.scale_min} > {spec.scale_max})",
        )
    app = spec.labels.get(LABEL_APP)
    if app:  # an app is named as functions are, so that NAME.NAMESPACE stays unambiguous
        validate_name(app, f"labels.{LABEL_APP}")
    _ = spec.max_inflight
    _ = spec.channel
    _ = spec.policy
    try:
        quota_of(spec.annotations, Quota())
    except BadQuotaAnnotation as exc:
        raise SpecError(f"annotations.{exc.annotation}", exc.expected) from None
    try:
        timeout = spec.exec_timeout
    except ValueError as exc:
        raise SpecError(f"envVars.{ENV_EXEC_TIMEOUT}", str(exc)) from None
    if timeout <= 0:
        raise SpecError(f"envVars.{ENV_EXEC_TIMEOUT}", "expected a positive duration such as 30s")


def _optional_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise SpecError(key, f"expected a string, got {_type_name(value)}")


def _optional_bool(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise SpecError(key, f"expected true or false, got {_type_name(value)}")


def _str_list(value: object, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(key, "expected a list of strings")
    return tuple(value)


def _str_map(value: object, key: str) -> dict[str, str]:
    """A string-to-string map."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(key, f"expected a map of strings, got {_type_name(value)}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise SpecError(key, f"keys must be strings, got {k!r}")
        if isinstance(v, str):
            out[k] = v
        else:
            raise SpecError(f"{key}.{k}", f"expected a string, got {_type_name(v)}")
    return out


def _resources(value: object, key: str) -> Resources:
    if value is None:
        return Resources()
    if not isinstance(value, dict):
        raise SpecError(key, "expected an object with 'memory' and/or 'cpu'")
    memory, cpu = value.get("memory"), value.get("cpu")
    if memory is not None and memory != "":
        if not isinstance(memory, str | int) or isinstance(memory, bool):
            raise SpecError(f"{key}.memory", "expected a quantity such as '128Mi'")
        try:
            if parse_size(memory) < 1024 * 1024:
                raise SpecError(f"{key}.memory", f"{memory!r} is below the minimum of 1Mi")
        except ValueError as exc:
            raise SpecError(f"{key}.memory", str(exc)) from None
    if cpu is not None and cpu != "":
        if not isinstance(cpu, str | int | float) or isinstance(cpu, bool):
            raise SpecError(f"{key}.cpu", "expected a quantity such as '500m' or '1'")
        try:
            parse_cpu(cpu)
        except ValueError as exc:
            raise SpecError(f"{key}.cpu", str(exc)) from None
    return Resources(
        memory=str(memory) if memory not in (None, "") else None,
        cpu=str(cpu) if cpu not in (None, "") else None,
    )


def _type_name(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


# --- stack.yml ---------------------------------------------------------------------------------


class _TextLoader(yaml.SafeLoader):
    """YAML as faas-cli reads a stack file: every scalar keeps its text as written.

    faas-cli decodes stack.yml into Go structs whose fields are strings (environment, labels,
    annotations, secrets, image...), and Go's YAML hands a string field the scalar's text. PyYAML's
    SafeLoader types scalars by YAML 1.1 first, so `1.10` would become "1.1", `10:30` "630" (base
    60), `017` "15" and `off` "false". This loader builds booleans, numbers and timestamps as
    their text instead; null stays None, so an empty setting still reads as absent. The few
    fields that are not strings are parsed from that text where they are read (`_stack_bool`).
    """


def _scalar_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


for _tag in ("bool", "int", "float", "timestamp"):
    _TextLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _scalar_text)


def _load_text_yaml(text: str) -> Any:
    """The document in `text`, scalars as written; yaml.YAMLError when it is malformed."""
    loader = _TextLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_yaml(text: str, where: str) -> Any:
    """A stack file's YAML as faasd-py reads it everywhere (scalars keep their text); SpecError
    naming `where` when it is malformed."""
    try:
        return _load_text_yaml(text)
    except yaml.YAMLError as exc:
        raise SpecError(where, f"not valid YAML: {exc}") from None


# The forms Go's YAML accepts for a boolean field (YAML 1.2's, and YAML 1.1's for compatibility).
_YAML_TRUE = frozenset({"true", "y", "yes", "on"})
_YAML_FALSE = frozenset({"false", "n", "no", "off"})


def _stack_bool(value: object, field: str) -> bool:
    if value is None:
        return False
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _YAML_TRUE:
        return True
    if text in _YAML_FALSE:
        return False
    raise SpecError(field, f"expected true or false, got {_type_name(value)} {value!r}")


def _stack_str_map(value: object, field: str) -> dict[str, str]:
    """A map of strings from a stack file: an empty value (`KEY:`) is the empty string, as
    faas-cli reads it."""
    if isinstance(value, dict):
        value = {k: "" if v is None else v for k, v in value.items()}
    return _str_map(value, field)


@dataclass(frozen=True)
class StackFunction:
    """A function of a stack.yml: its spec, plus where its handler lives and its template."""

    spec: FunctionSpec
    lang: str
    handler: Path


@dataclass(frozen=True)
class Stack:
    gateway: str | None
    functions: tuple[StackFunction, ...]

    def select(self, names: tuple[str, ...]) -> tuple[StackFunction, ...]:
        """The named functions (all when none named); a name not in the stack is an error."""
        if not names:
            return self.functions
        known = {f.spec.service: f for f in self.functions}
        missing = [n for n in names if n not in known]
        if missing:
            raise SpecError("functions", f"not in the stack file: {', '.join(missing)}")
        return tuple(known[n] for n in names)


def load_stack(path: Path) -> Stack:
    """Read and validate a stack.yml file, its environment variables substituted as faas-cli
    does; relative handler paths resolve against its folder."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(str(path), f"cannot read the stack file: {exc.strerror}") from None
    return parse_stack(substitute_environment(text, os.environ), path.parent, str(path))


# faas-cli substitutes environment variables in the stack file before it reads it (--envsubst,
# on by default; drone/envsubst's EvalEnv): ${NAME}, and ${NAME:-WORD}, ${NAME-WORD},
# ${NAME:=WORD}, ${NAME=WORD} for WORD when NAME is unset or empty (EvalEnv cannot tell the two
# apart). An unset NAME is "". `$${` writes a literal `${`; `$NAME` without braces is left as is.
# (drone/envsubst's string functions, such as ${NAME^^}, are left as written.)
_ENV_REFERENCE = re.compile(
    r"\$(?P<escape>\$)\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-=])(?P<word>[^}]*))?\}"
)


def substitute_environment(text: str, environ: Mapping[str, str]) -> str:
    """`text` with its ${NAME} references replaced from `environ`, as faas-cli replaces them."""

    def value(match: re.Match[str]) -> str:
        if match["escape"]:
            return "${"
        found = environ.get(match["name"], "")
        return str(match["word"]) if found == "" and match["op"] else found

    return _ENV_REFERENCE.sub(value, text)


def parse_stack(text: str, base_dir: Path, source: str = "stack.yml") -> Stack:
    """A stack file's functions; `source` names the file in errors (an unknown key names its
    line too)."""
    try:
        loader = _TextLoader(text)
        try:
            node = loader.get_single_node()
            doc = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise SpecError(source, f"not valid YAML: {exc}") from None
    if node is not None:
        check_stack_keys(node, source)
    if not isinstance(doc, dict):
        raise SpecError(source, "expected a YAML mapping with 'provider' and 'functions'")
    provider = doc.get("provider") or {}
    if not isinstance(provider, dict):
        raise SpecError("provider", "expected a mapping with 'name' and 'gateway'")
    gateway = provider.get("gateway")
    if gateway is not None and not isinstance(gateway, str):
        raise SpecError("provider.gateway", "expected a URL such as http://127.0.0.1:8080")
    functions = doc.get("functions")
    if not isinstance(functions, dict) or not functions:
        raise SpecError("functions", "expected a mapping of function names to their settings")
    return Stack(
        gateway=gateway,
        functions=tuple(_stack_function(name, body, base_dir) for name, body in functions.items()),
    )


# --- the keys a stack file may hold -----------------------------------------------------------
#
# faas-cli decodes stack.yml into Go structs and drops what they do not name, so a typo
# (`limit:` for `limits:`) would deploy a function without its limits. faasd-py refuses keys
# that faas-cli's schema (stack/schema.go) does not know; the ones faasd-py has no use for
# (build_args, skip_build, ...) are still accepted, so a stack file faas-cli reads stays valid
# here. Keys that start with `x-` are extensions (anchors of shared settings, tools' own data),
# as in compose files.
STACK_KEYS = ("version", "provider", "functions", "configuration")
STACK_PROVIDER_KEYS = ("name", "gateway", "network")
STACK_FUNCTION_KEYS = (
    "lang",
    "handler",
    "image",
    "fprocess",
    "environment",
    "environment_file",
    "secrets",
    "labels",
    "annotations",
    "limits",
    "requests",
    "constraints",
    "namespace",
    "readonly_root_filesystem",
    "skip_build",
    "build_options",
    "build_args",
    "build_secrets",
    "platforms",
    "registry_auth",
    "tls_skip_verify",
)
STACK_RESOURCE_KEYS = ("memory", "cpu")
_EXTENSION_PREFIX = "x-"


def check_stack_keys(document: yaml.Node, source: str) -> None:
    """SpecError for the first key of the stack file (top level, provider, a function, its
    limits or requests) that faas-cli's schema does not know: the file, the line and the
    nearest known key."""
    if not isinstance(document, yaml.MappingNode):
        return  # parse_stack says what shape it expected
    _known_keys(document, STACK_KEYS, "", source)
    for key, value in _mapping_items(document):
        if key == "provider":
            _known_keys(value, STACK_PROVIDER_KEYS, "provider", source)
        elif key == "functions" and isinstance(value, yaml.MappingNode):
            for name, body in _mapping_items(value):
                where = f"functions.{name}"
                _known_keys(body, STACK_FUNCTION_KEYS, where, source)
                for field, resources in _mapping_items(body):
                    if field in ("limits", "requests"):
                        _known_keys(resources, STACK_RESOURCE_KEYS, f"{where}.{field}", source)


def _mapping_items(node: yaml.Node) -> list[tuple[str, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        return []
    return [(str(k.value), v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]


def _known_keys(node: yaml.Node, known: tuple[str, ...], where: str, source: str) -> None:
    if not isinstance(node, yaml.MappingNode):
        return  # a wrong type is reported by the field's own check, with what it expected
    for key_node, _ in node.value:
        key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
        if key is not None and (key in known or key.startswith(_EXTENSION_PREFIX)):
            continue
        shown = repr(key) if key is not None else "a key that is not a string"
        line = key_node.start_mark.line + 1
        close = difflib.get_close_matches(key or "", known, n=1)
        hint = (
            f"did you mean {close[0]!r}?"
            if close
            else f"expected one of {', '.join(known)} (or an x- extension)"
        )
        field = f"{where}.{key}" if where else str(key)
        raise SpecError(field, f"unknown key {shown} at {source}, line {line}; {hint}")


# FunctionDeployment fields whose stack.yml key is spelled differently.
_STACK_FIELD_NAMES = {"envVars": "environment", "envProcess": "fprocess"}


def _stack_function(name: object, body: object, base_dir: Path) -> StackFunction:
    service = validate_name(name, "functions")
    where = f"functions.{service}"
    if not isinstance(body, dict):
        raise SpecError(where, "expected a mapping with lang, handler and image")
    lang = body.get("lang")
    if lang not in SUPPORTED_LANGS:
        raise SpecError(
            f"{where}.lang",
            f"expected one of {', '.join(SUPPORTED_LANGS)}, "
            + ("but it is missing" if lang is None else f"got {lang!r}"),
        )
    handler = body.get("handler")
    if not isinstance(handler, str) or not handler:
        raise SpecError(
            f"{where}.handler", "expected the path of the handler's folder, e.g. ./hello"
        )
    image = body.get("image")
    if not isinstance(image, str) or not image:
        raise SpecError(f"{where}.image", "expected a package name such as hello:latest")

    env: dict[str, str] = {}
    env_files = body.get("environment_file") or []
    if not isinstance(env_files, list):
        raise SpecError(f"{where}.environment_file", "expected a list of YAML file paths")
    for env_file in env_files:
        env.update(_environment_file(base_dir, env_file, f"{where}.environment_file"))
    env.update(_stack_str_map(body.get("environment"), f"{where}.environment"))

    deployment = {
        "service": service,
        "image": image,
        "namespace": body.get("namespace"),
        "envProcess": body.get("fprocess"),
        "envVars": env,
        "constraints": body.get("constraints"),
        "secrets": body.get("secrets"),
        "labels": _stack_str_map(body.get("labels"), f"{where}.labels"),
        "annotations": _stack_str_map(body.get("annotations"), f"{where}.annotations"),
        "limits": body.get("limits"),
        "requests": body.get("requests"),
        "readOnlyRootFilesystem": _stack_bool(
            body.get("readonly_root_filesystem"), f"{where}.readonly_root_filesystem"
        ),
    }
    try:
        spec = parse_deployment(deployment)
    except SpecError as exc:
        # Name the field as the stack file spells it.
        head, dot, rest = exc.field.partition(".")
        field = _STACK_FIELD_NAMES.get(head, head) + dot + rest
        raise SpecError(f"{where}.{field}", exc.message.split(": ", 1)[-1]) from None
    return StackFunction(spec=spec, lang=lang, handler=(base_dir / handler).resolve())


def _environment_file(base_dir: Path, name: object, where: str) -> dict[str, str]:
    if not isinstance(name, str):
        raise SpecError(where, "expected a list of YAML file paths")
    path = base_dir / name
    try:
        doc = _load_text_yaml(path.read_text())
    except OSError as exc:
        raise SpecError(where, f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError(where, f"{path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or "environment" not in doc:
        raise SpecError(where, f"{path} must hold a mapping with an 'environment' key")
    return _stack_str_map(doc["environment"], f"{where}[{name}].environment")
