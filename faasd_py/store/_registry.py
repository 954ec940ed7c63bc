"""What the gateway needs from a registry; the embedded SQLite one and (later) Redis serve it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from faasd_py.errors import BadRequest
from faasd_py.spec import FunctionSpec


@dataclass(frozen=True)
class StoredFunction:
    spec: FunctionSpec
    created_at: float  # seconds since the epoch


class Registry(Protocol):
    async def put_function(self, spec: FunctionSpec) -> None:
        """Insert or replace; keeps the original creation time on replace."""
        ...

    async def get_function(self, name: str) -> StoredFunction | None: ...

    async def list_functions(self) -> list[StoredFunction]: ...

    async def delete_function(self, name: str) -> bool: ...

    async def put_secret(self, name: str, value: bytes, *, create: bool) -> bool:
        """With create, add a new secret (False if it exists); else replace (False if absent)."""
        ...

    async def get_secret(self, name: str) -> bytes | None: ...

    async def list_secrets(self) -> list[str]: ...

    async def delete_secret(self, name: str) -> bool: ...

    async def close(self) -> None: ...


async def fetch_secrets(registry: Registry, names: tuple[str, ...]) -> dict[str, bytes]:
    """The values of the secrets a function names; BadRequest naming the first missing one."""
    values = {}
    for name in names:
        value = await registry.get_secret(name)
        if value is None:
            raise BadRequest(
                f"secrets: secret {name!r} does not exist; create it with "
                f"`faasd-py secret create {name}`"
            )
        values[name] = value
    return values
