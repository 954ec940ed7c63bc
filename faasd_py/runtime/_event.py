"""What a handler sees: the event and context of OpenFaaS's python3-http template (its
`index.py` builds them from Flask's request; the same attributes here, without Flask). Pure
code: no I/O but reading a secret's file on request. The return value's way back is
`faasd_py.runtime._response`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload
from urllib.parse import parse_qsl

from faasd_py.runtime._multidict import ImmutableMultiDict, MissingKey

if TYPE_CHECKING:
    from faasd_py.runtime._storage import Storage

T = TypeVar("T")


class CaseInsensitiveHeaders(Mapping[str, str]):
    """Request headers, looked up without regard to case (`event.headers["content-type"]`).

    Names read as the template shows them (a WSGI server title-cases them: `X-Call-Id`);
    repeated headers are one value joined by ", ". A missing one raises `MissingKey` (400),
    as werkzeug's headers do. Unlike werkzeug's, iterating yields names, as any Mapping.

    The lookup table is built on first use: many handlers never read a header, and building it
    is a third of what an event costs."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs
        self._built: dict[str, tuple[str, str]] | None = None

    @property
    def _items(self) -> dict[str, tuple[str, str]]:
        items = self._built
        if items is None:
            items = self._built = {}
            for key, value in self._pairs:
                lower = key.lower()
                if lower in items:
                    value = f"{items[lower][1]}, {value}"
                items[lower] = (key.replace("_", "-").title(), value)
        return items

    def __getitem__(self, key: str) -> str:
        try:
            return self._items[key.lower()][1]
        except KeyError:
            raise MissingKey(key, "header") from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    @overload
    def get(self, key: str, default: None = None) -> str | None: ...
    @overload
    def get(self, key: str, default: str | T) -> str | T: ...
    @overload
    def get(self, key: str, default: T, type: Callable[[str], T]) -> T: ...

    def get(self, key: str, default: Any = None, type: Callable[[str], Any] | None = None) -> Any:
        """The value, or `default`; with `type`, converted by it (`default` if it refuses)."""
        item = self._items.get(key.lower())
        if item is None:
            return default
        if type is None:
            return item[1]
        try:
            return type(item[1])
        except (ValueError, TypeError):
            return default

    def getlist(self, key: str) -> list[str]:
        """The header's values as werkzeug's request headers give them: one joined value."""
        item = self._items.get(key.lower())
        return [] if item is None else [item[1]]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True)
class Event:
    """An HTTP request, as OpenFaaS's python3-http template hands it to `handle`:
    `query` is Flask's `request.args` (first value on `[]` and `.get`, `.getlist` for all)."""

    body: bytes
    headers: CaseInsensitiveHeaders
    method: str
    query: ImmutableMultiDict
    path: str

    @classmethod
    def from_request(
        cls, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes
    ) -> Event:
        return cls(
            body=body,
            headers=CaseInsensitiveHeaders(headers),
            method=method,
            query=ImmutableMultiDict(parse_qsl(query, keep_blank_values=True) if query else ()),
            path=path,
        )


def _hostname() -> str:
    # The template's own rule (its Context reads the variable for each request).
    return os.getenv("HOSTNAME", "localhost")


@dataclass(frozen=True)
class Context:
    """What the platform tells a handler about its invocation."""

    function_name: str
    call_id: str
    secrets_dir: Path
    deadline: float = field(repr=False)
    # The app's objects (`get`/`put`/`delete`/`exists`/`list`, see faasd_py.runtime._storage),
    # through the worker and its cache; None only where no worker is at the other end.
    storage: Storage | None = field(default=None, repr=False)
    # The template's `context.hostname`: $HOSTNAME, which the runtime sets to the instance's
    # name when it starts (see faasd_py.runtime._serve.set_hostname).
    hostname: str = field(default_factory=_hostname)

    def remaining_time(self) -> float:
        """Seconds until the invocation times out."""
        return max(0.0, self.deadline - time.monotonic())

    def secret(self, name: str) -> str:
        """The value of a secret named in the function's `secrets` list."""
        try:
            return (self.secrets_dir / name).read_text()
        except FileNotFoundError:
            raise KeyError(
                f"secret {name!r} is not mounted: add it to the function's secrets "
                "and create it with `faasd-py secret create`"
            ) from None
