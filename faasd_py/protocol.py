"""Messages between the worker and the runtime inside a sandbox, as msgpack frames.

A frame is a 4-byte big-endian length followed by a msgpack map. `FrameDecoder` turns bytes into
messages without touching a socket (h11's way), so every channel shares it and tests can drive it
directly. Messages:

    runtime -> worker   {"op": "ready", "pid", "load_seconds"}
                        {"op": "load_failed", "error"}           then the runtime exits
                        {"op": "result", "id", "status", "headers", "body", "error", "seconds"}
    worker -> runtime   {"op": "invoke", "id", "method", "path", "query", "headers", "body",
                         "call_id", "timeout"}

    context.storage, while a handler runs (faasd_py.cache answers in the worker):
    runtime -> worker   {"op": "storage", "id", "call", "key", "data"}   call: get, put, delete,
                                                                       exists, list (key: prefix)
    worker -> runtime   {"op": "storage_reply", "id", "value", "error"}

`error` in a result is None on success, else "<ExceptionType>: <message>" and the status is 500.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import types
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self, Union, get_args, get_origin, get_type_hints

import msgpack

HEADER = struct.Struct(">I")
# Headroom above the body limit for the rest of a frame (headers, path, query).
FRAME_OVERHEAD = 1024 * 1024

Headers = list[tuple[str, str]]


class _Duration:
    """Seconds as a sandbox may report them: finite and not negative (a NaN or an infinity
    would poison the metrics they feed)."""

    def __contains__(self, value: float) -> bool:
        return 0 <= value < math.inf

    def __str__(self) -> str:
        return "float, finite and >= 0"


HttpStatus = Annotated[int, range(100, 600)]
Seconds = Annotated[float, _Duration()]


class ProtocolError(Exception):
    """A frame that cannot be decoded or is larger than the channel allows, or a message that is
    not one of the protocol's (a field missing or of the wrong type)."""


class ChannelClosed(Exception):
    """The peer closed the channel (or died). Re-exported by faasd_py.datapath.channel."""


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request to a function, as the gateway hands it to a worker."""

    call_id: str
    method: str
    path: str
    query: str
    headers: Headers
    body: bytes


# --- messages ----------------------------------------------------------------------------------
#
# Each message is a frozen dataclass whose annotations are its wire format: `from_wire` checks
# every field against its type (exactly: a bool is not an int) and raises ProtocolError, and
# nothing else, for a map that is not the message. A sandbox's messages are untrusted:
# `from_sandbox` is the one place the worker decodes them.


class Message:
    """Base of the wire messages: `to_wire` and `from_wire` read the dataclass's fields."""

    __slots__ = ()
    op: ClassVar[str]
    _schema: ClassVar[tuple[_Field, ...]]
    _names: ClassVar[tuple[str, ...]]
    # The common case checked in one go (see _fast_invocation); None where there is none.
    _fast: ClassVar[Callable[[dict[str, Any]], tuple[Any, ...] | None] | None] = None

    def to_wire(self) -> dict[str, Any]:
        message: dict[str, Any] = {"op": self.op}
        for name in self._names:
            message[name] = getattr(self, name)
        return message

    @classmethod
    def from_wire(cls, message: Any) -> Self:
        """The message in `message` (a decoded map); ProtocolError if it is not one."""
        if message.__class__ is not dict or message.get("op") != cls.op:
            raise ProtocolError(f"expected a {cls.op!r} message, got {_describe(message)}")
        return cls(*_values(cls, message))


@dataclass(frozen=True, slots=True)
class Invocation(Message):
    op = "invoke"
    id: int
    call_id: str
    method: str
    path: str
    query: str
    headers: Headers
    body: bytes
    # Seconds the handler may run; the runtime tells the handler through its context.
    timeout: Seconds

    @classmethod
    def of(cls, id: int, request: Request, timeout: float) -> Invocation:
        """The invocation that carries `request` to an instance as message `id`."""
        r = request
        return cls(id, r.call_id, r.method, r.path, r.query, r.headers, r.body, timeout)


@dataclass(frozen=True, slots=True)
class Ready(Message):
    """The handler is imported: the instance takes invocations."""

    op = "ready"
    pid: int
    load_seconds: Seconds


@dataclass(frozen=True, slots=True)
class LoadFailed(Message):
    """The handler could not be imported; the runtime exits after sending this."""

    op = "load_failed"
    error: str


@dataclass(frozen=True, slots=True)
class Result(Message):
    op = "result"
    id: int
    status: HttpStatus
    headers: Headers
    body: bytes
    # None on success; "<ExceptionType>: <message>" when the handler failed.
    error: str | None
    # Time the handler ran, measured inside the sandbox.
    seconds: Seconds


STORAGE_CALLS = ("get", "put", "delete", "exists", "list")


@dataclass(frozen=True, slots=True)
class StorageCall(Message):
    """A handler's call on `context.storage`; its ids are the runtime's own, apart from those
    of invocations."""

    op = "storage"
    id: int
    call: Annotated[str, STORAGE_CALLS]
    key: str  # the prefix, for list
    data: bytes | None = None  # for put


@dataclass(frozen=True, slots=True)
class StorageReply(Message):
    op = "storage_reply"
    id: int
    # get: bytes or None; put: the new version; delete, exists: bool; list: the keys.
    value: bytes | int | bool | list[str] | None
    # None on success; else {"kind": "unavailable" | "invalid" | "failed", "message",
    # and for unavailable "store" and "cause"}.
    error: dict[str, str] | None = None


SandboxMessage = Ready | LoadFailed | Result | StorageCall
_FROM_SANDBOX: dict[str, type[SandboxMessage]] = {
    cls.op: cls for cls in (Ready, LoadFailed, Result, StorageCall)
}


def from_sandbox(message: Any) -> SandboxMessage:
    """What an instance sent, checked: ProtocolError (naming what is wrong) for anything that is
    not one of the messages a runtime sends, whatever `message` is."""
    op = message.get("op") if message.__class__ is dict else None
    cls = _FROM_SANDBOX.get(op) if op.__class__ is str else None
    if cls is None:
        expected = ", ".join(_FROM_SANDBOX)
        raise ProtocolError(f"expected a message of {expected}; got {_describe(message)}")
    return cls(*_values(cls, message))


# --- checking fields against their types ---------------------------------------------------------

# A field's accepted classes, each with a conversion to apply (None: taken as it is); any other
# class is rejected. Exact classes: a bool is not an int, a list is not a str.
_Convert = Callable[[Any], Any] | None
_MISSING: Any = object()


class _Mismatch(Exception):
    """A value that is not of its field's type; the message says what it should be."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kinds: dict[type, _Convert]
    expected: str
    default: Any  # _MISSING: required


def _values(cls: type[Message], message: dict[str, Any]) -> Sequence[Any]:
    """`cls`'s fields in `message`: by the class's fast check when the message is the common
    case (the hot messages, one per invocation each way), else by the schema, which also says
    what is wrong."""
    fast = cls._fast
    values = None if fast is None else fast(message)
    return _fields(cls, message) if values is None else values


def _fields(cls: type[Message], message: dict[str, Any]) -> list[Any]:
    """The values of `cls`'s fields in `message`, in order, checked (and converted: an int
    where a float goes, pairs of headers to tuples)."""
    values: list[Any] = []
    field = None
    try:
        for field in cls._schema:
            value = message.get(field.name, field.default)
            convert = field.kinds.get(value.__class__, _reject)
            values.append(value if convert is None else convert(value))
    except _Mismatch as exc:
        assert field is not None
        got = "nothing" if message.get(field.name, _MISSING) is _MISSING else exc
        raise ProtocolError(
            f"malformed {cls.op!r} message: {field.name!r} must be {field.expected}, got {got}"
        ) from None
    return values


def _reject(value: Any) -> Any:
    raise _Mismatch(_describe(value))


def _describe(value: Any) -> str:
    """A short account of a bad value for an error message (never the whole of it)."""
    if value.__class__ is dict:
        op = value.get("op", _MISSING)
        return "a map without an 'op'" if op is _MISSING else f"a map with op {_short(op)}"
    if value is None or value.__class__ in (bool, int, float, str):
        return f"{type(value).__name__} {_short(value)}"
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kinds(hint: Any) -> dict[type, _Convert]:
    """The classes a value of type `hint` may arrive as on the wire, with their conversions."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:  # a str out of a fixed set, a number within a range
        base, allowed = args
        return {cls: _within(allowed, then) for cls, then in _kinds(base).items()}
    if origin in (Union, types.UnionType):
        return {cls: convert for arg in args for cls, convert in _kinds(arg).items()}
    if origin is list:
        return {list: _each(_kinds(args[0]))}
    if origin is tuple:  # a header: msgpack turns tuples into lists
        return dict.fromkeys((list, tuple), _pair(_kinds(args[0]), _kinds(args[1])))
    if origin is dict:
        return {dict: _items(_kinds(args[0]), _kinds(args[1]))}
    if hint is float:
        return {float: None, int: float}
    if hint in (int, str, bytes, bool, types.NoneType):
        return {hint: None}
    raise TypeError(f"no wire form for {hint!r}")


def _check(kinds: dict[type, _Convert], value: Any) -> Any:
    convert = kinds.get(value.__class__, _reject)
    return value if convert is None else convert(value)


def _within(allowed: Container[Any], then: _Convert) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise _Mismatch(_describe(value))
        return value if then is None else then(value)

    return check


def _each(kinds: dict[type, _Convert]) -> Callable[[list[Any]], list[Any]]:
    def check(values: list[Any]) -> list[Any]:
        checked = []
        try:
            for value in values:
                convert = kinds.get(value.__class__, _reject)
                checked.append(value if convert is None else convert(value))
        except _Mismatch as exc:
            raise _Mismatch(f"a list holding {exc}") from None
        return checked

    return check


def _pair(first: dict[type, _Convert], second: dict[type, _Convert]) -> Callable[[Any], Any]:
    plain = (
        frozenset(a for a, c in first.items() if c is None),
        frozenset(b for b, c in second.items() if c is None),
    )

    def check(value: list[Any] | tuple[Any, ...]) -> tuple[Any, Any]:
        if len(value) != 2:
            raise _Mismatch(f"{type(value).__name__} of length {len(value)}")
        a, b = value
        if a.__class__ in plain[0] and b.__class__ in plain[1]:
            return a, b
        return _check(first, a), _check(second, b)

    return check


def _items(keys: dict[type, _Convert], values: dict[type, _Convert]) -> Callable[[Any], Any]:
    def check(value: dict[Any, Any]) -> dict[Any, Any]:
        try:
            return {_check(keys, k): _check(values, v) for k, v in value.items()}
        except _Mismatch as exc:
            raise _Mismatch(f"a map holding {exc}") from None

    return check


def _schema(cls: type[Message]) -> tuple[_Field, ...]:
    hints = get_type_hints(cls, include_extras=True)
    return tuple(
        _Field(
            name=f.name,
            kinds=_kinds(hints[f.name]),
            expected=_expected(hints[f.name]),
            default=_MISSING if f.default is dataclasses.MISSING else f.default,
        )
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    )


def _expected(hint: Any) -> str:
    if get_origin(hint) is Annotated:
        base, allowed = get_args(hint)
        if isinstance(allowed, range):
            return f"{_expected(base)} from {allowed.start} to {allowed.stop - 1}"
        if isinstance(allowed, tuple):
            return f"one of {', '.join(map(repr, allowed))}"
        return str(allowed)
    return hint.__name__ if isinstance(hint, type) else str(hint)


# --- the hot messages' fast checks -------------------------------------------------------------
#
# An invocation and its result cross the channel once per call, and the schema's walk (a
# conversion function per field, per header) costs more than the rest of their decoding. These
# accept only the common case, every value of exactly its field's plainest class, and return None
# for anything else: the schema then decides, so a message is accepted or refused, with the same
# error, as without them (tests/unit/test_protocol.py holds them to that).

_PAIRS = (list, tuple)


def _str_pairs(items: Any) -> list[tuple[str, str]] | None:
    """Headers as pairs of str, or None if any is not one."""
    if items.__class__ is not list:
        return None
    pairs = []
    for item in items:
        if item.__class__ not in _PAIRS or len(item) != 2:
            return None
        name, value = item
        if name.__class__ is not str or value.__class__ is not str:
            return None
        pairs.append((name, value))
    return pairs


def _fast_invocation(m: dict[str, Any]) -> tuple[Any, ...] | None:
    get = m.get
    id_, call_id, method, path, query = (
        get("id"),
        get("call_id"),
        get("method"),
        get("path"),
        get("query"),
    )
    body, timeout = get("body"), get("timeout")
    if (
        id_.__class__ is int
        and call_id.__class__ is str
        and method.__class__ is str
        and path.__class__ is str
        and query.__class__ is str
        and body.__class__ is bytes
        and timeout.__class__ is float
        and 0 <= timeout < math.inf
    ):
        headers = _str_pairs(get("headers"))
        if headers is not None:
            return id_, call_id, method, path, query, headers, body, timeout
    return None


def _fast_result(m: dict[str, Any]) -> tuple[Any, ...] | None:
    get = m.get
    id_, status, body, error, seconds = (
        get("id"),
        get("status"),
        get("body"),
        get("error"),
        get("seconds"),
    )
    if (
        id_.__class__ is int
        and status.__class__ is int
        and 100 <= status < 600
        and body.__class__ is bytes
        and (error is None or error.__class__ is str)
        and seconds.__class__ is float
        and 0 <= seconds < math.inf
        and "error" in m
    ):
        headers = _str_pairs(get("headers"))
        if headers is not None:
            return id_, status, headers, body, error, seconds
    return None


for _cls in (Invocation, Ready, LoadFailed, Result, StorageCall, StorageReply):
    _cls._schema = _schema(_cls)
    _cls._names = tuple(f.name for f in _cls._schema)
Invocation._fast = _fast_invocation
Result._fast = _fast_result


def encode(message: dict[str, Any]) -> bytes:
    payload: bytes = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Accumulates bytes and yields whole messages; rejects frames above `max_frame`.

    Every frame must be a map; with `require_op` (the sandbox channels) a map with an 'op'.
    The cluster transport's replies carry an id and no op, so it passes False."""

    def __init__(self, max_frame: int, *, require_op: bool = True) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame
        self._require_op = require_op

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages: list[dict[str, Any]] = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self._max_frame:
                raise ProtocolError(
                    f"frame of {length} bytes exceeds the limit of {self._max_frame}"
                )
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            # Decoded in place: a memoryview, not a slice of the buffer and a bytes of that
            # (two copies of every frame). Released before the buffer shrinks under it.
            with memoryview(self._buffer) as view:
                try:
                    message = msgpack.unpackb(view[HEADER.size : end], raw=False)
                except (ValueError, msgpack.UnpackException) as exc:
                    raise ProtocolError(f"undecodable frame: {exc}") from exc
            del self._buffer[:end]
            if not isinstance(message, dict) or (self._require_op and "op" not in message):
                with_op = " with an 'op' key" if self._require_op else ""
                raise ProtocolError(f"a frame must be a map{with_op}")
            messages.append(message)
        return messages
