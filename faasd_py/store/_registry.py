"""What the gateway needs from a registry; the embedded SQLite one and (later) Redis serve it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from faasd_py.errors import BadRequest
from faasd_py.spec import DEFAULT_NAMESPACE, FunctionSpec


@dataclass(frozen=True)
class StoredFunction:
    spec: FunctionSpec
    created_at: float  # seconds since the epoch
    # Replicas set by scale-function, None if never scaled: kept across updates and restarts.
    replicas: int | None = None


@dataclass(frozen=True)
class Namespace:
    """A namespace as faas-provider's FunctionNamespace describes it."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
        }


class Registry(Protocol):
    """Functions are named by their ref (faasd_py.spec.function_ref); secrets by namespace and
    name. The default namespace always exists."""

    async def put_function(self, spec: FunctionSpec) -> None:
        """Insert or replace; keeps the creation time and the scaled replicas on replace."""
        ...

    async def get_function(self, ref: str) -> StoredFunction | None: ...

    async def list_functions(self, namespace: str | None = None) -> list[StoredFunction]:
        """The functions of one namespace, or of all with None."""
        ...

    async def delete_function(self, ref: str) -> bool: ...

    async def set_replicas(self, ref: str, replicas: int) -> bool:
        """Remember scale-function's replicas (False if the function is absent)."""
        ...

    async def put_secret(self, namespace: str, name: str, value: bytes, *, create: bool) -> bool:
        """With create, add a new secret (False if it exists); else replace (False if absent)."""
        ...

    async def get_secret(self, namespace: str, name: str) -> bytes | None: ...

    async def list_secrets(self, namespace: str) -> list[str]: ...

    async def delete_secret(self, namespace: str, name: str) -> bool: ...

    async def get_namespace(self, name: str) -> Namespace | None: ...

    async def list_namespaces(self) -> list[Namespace]: ...

    async def put_namespace(self, namespace: Namespace, *, create: bool) -> bool:
        """With create, add it (False if it exists); else replace its labels and annotations
        (False if absent)."""
        ...

    async def delete_namespace(self, name: str) -> bool:
        """Remove an empty namespace with its secrets (False if absent); the caller checks
        that it holds no function."""
        ...

    async def close(self) -> None: ...


async def fetch_secrets(
    registry: Registry, names: tuple[str, ...], namespace: str = DEFAULT_NAMESPACE
) -> dict[str, bytes]:
    """The values of the secrets a function names; BadRequest naming the first missing one."""
    values = {}
    for name in names:
        value = await registry.get_secret(namespace, name)
        if value is None:
            where = "" if namespace == DEFAULT_NAMESPACE else f" --namespace {namespace}"
            raise BadRequest(
                f"secrets: secret {name!r} does not exist in namespace {namespace!r}; create it "
                f"with `faasd-py secret create {name}{where}`"
            )
        values[name] = value
    return values
