"""`event.query`: the query string as Flask's `request.args` hands it to a python3-http handler.

A read-only multi-value dict in the manner of werkzeug's `ImmutableMultiDict`, without werkzeug
(the runtime stays lean). Every lookup that returns one value returns the FIRST one
(`query["a"]`, `.get("a")`, `.values()`, `.items()`, `dict(query)`, `json.dumps(query)`);
`.getlist("a")` returns all of them, in order; `.to_dict(flat=False)` all of them by key.

It subclasses dict, as werkzeug's does, so that what handlers do with a dict works on it
(`isinstance(q, dict)`, `json.dumps`, `{**q}`); underneath, each key holds the list of its
values, and every dict method that would show those lists is overridden to show the first.
A missing key raises `MissingKey`, a KeyError that the runtime answers with 400, as Flask
answers werkzeug's `BadRequestKeyError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast, overload

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_values

__all__ = ["ImmutableMultiDict", "MissingKey"]

T = TypeVar("T")


class MissingKey(KeyError):
    """A key the request does not carry: the caller's mistake, answered with 400."""

    status = 400

    def __init__(self, key: str, where: str) -> None:
        super().__init__(key)
        self.key = key
        self.where = where

    def __str__(self) -> str:
        return f"the request has no {self.where} {self.key!r}"


class ImmutableMultiDict(dict[str, str]):
    """Keys with one or more values each, in the order they came; read-only."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = (), *, where: str = "query parameter"):
        lists: dict[str, list[str]] = {}
        for key, value in pairs:
            lists.setdefault(key, []).append(value)
        # The lists live in the dict's own storage; only this class's methods read it.
        store: dict[str, Any] = lists
        super().__init__(store)
        self._where = where

    def _lists(self, key: str) -> list[str]:
        # What the storage really holds under the key (the dict[str, str] face is the users').
        return cast("list[str]", super().__getitem__(key))

    # --- one value per key: the first -----------------------------------------------------------

    def __getitem__(self, key: str) -> str:
        if not dict.__contains__(self, key):
            raise MissingKey(key, self._where)
        return self._lists(key)[0]

    @overload
    def get(self, key: str, default: None = None) -> str | None: ...
    @overload
    def get(self, key: str, default: str) -> str: ...
    @overload
    def get(self, key: str, default: T) -> str | T: ...
    @overload
    def get(self, key: str, default: T, type: Callable[[str], T]) -> T: ...
    @overload
    def get(self, key: str, *, type: Callable[[str], T]) -> T | None: ...

    def get(self, key: str, default: Any = None, type: Callable[[str], Any] | None = None) -> Any:
        """The first value, or `default`. With `type`, the value converted by it; a value it
        rejects with ValueError or TypeError gives `default` (werkzeug's rule)."""
        if not dict.__contains__(self, key):
            return default
        value = self._lists(key)[0]
        if type is None:
            return value
        try:
            return type(value)
        except (ValueError, TypeError):
            return default

    def __iter__(self) -> Iterator[str]:
        # Overridden (not only keys()): it also moves dict(q) and {**q} off the fast path that
        # would copy the lists.
        return iter(dict.keys(self))

    def values(self) -> dict_values[str, str]:
        return self.to_dict().values()

    @overload
    def items(self) -> dict_items[str, str]: ...
    @overload
    def items(self, multi: bool) -> Iterable[tuple[str, str]]: ...

    def items(self, multi: bool = False) -> Iterable[tuple[str, str]]:
        """(key, first value) pairs; with `multi=True`, a pair for every value."""
        if not multi:
            return self.to_dict().items()
        return [(key, value) for key in self for value in self._lists(key)]

    def copy(self) -> dict[str, str]:
        """A plain, mutable dict of the first values (werkzeug's copy is a mutable MultiDict)."""
        return self.to_dict()

    # --- every value ----------------------------------------------------------------------------

    def getlist(self, key: str, type: Callable[[str], T] | None = None) -> list[Any]:
        """Every value of `key`, in order; [] when absent. With `type`, the values it accepts,
        converted."""
        if not dict.__contains__(self, key):
            return []
        values = self._lists(key)
        if type is None:
            return list(values)
        converted: list[T] = []
        for value in values:
            try:
                converted.append(type(value))
            except (ValueError, TypeError):
                continue
        return converted

    def lists(self) -> list[tuple[str, list[str]]]:
        """(key, every value) pairs."""
        return [(key, list(self._lists(key))) for key in self]

    def listvalues(self) -> list[list[str]]:
        return [list(self._lists(key)) for key in self]

    @overload
    def to_dict(self) -> dict[str, str]: ...
    @overload
    def to_dict(self, flat: bool) -> dict[str, Any]: ...

    def to_dict(self, flat: bool = True) -> dict[str, Any]:
        """A plain dict: the first value of each key, or with `flat=False` the list of all."""
        if flat:
            return {key: self._lists(key)[0] for key in self}
        return {key: list(self._lists(key)) for key in self}

    # --- comparisons, copies, display -----------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ImmutableMultiDict):
            return self.lists() == other.lists()
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None

    def __or__(self, other: dict[Any, Any]) -> dict[Any, Any]:
        return self.to_dict() | other

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.items(multi=True),), {"_where": self._where})

    def __copy__(self) -> ImmutableMultiDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ImmutableMultiDict:
        return self

    def __repr__(self) -> str:
        return f"ImmutableMultiDict({list(self.items(multi=True))!r})"

    # --- read-only ------------------------------------------------------------------------------

    def _immutable(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            f"{type(self).__name__} objects are immutable: copy it first (`query.to_dict()`)"
        )

    __setitem__ = _immutable
    __delitem__ = _immutable
    __ior__ = _immutable
    setdefault = _immutable
    update = _immutable
    pop = _immutable
    popitem = _immutable
    clear = _immutable
