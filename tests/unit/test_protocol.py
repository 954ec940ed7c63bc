"""Frames between worker and sandbox: encode, FrameDecoder fed bytes in any pieces, and the
checked decoding of every message a sandbox sends (`from_sandbox`), fuzzed."""

from __future__ import annotations

import re
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faasd_py.protocol import (
    HEADER,
    STORAGE_CALLS,
    FrameDecoder,
    Invocation,
    LoadFailed,
    ProtocolError,
    Ready,
    Result,
    SandboxMessage,
    StorageCall,
    StorageReply,
    _fields,
    encode,
    from_sandbox,
)

LIMIT = 1 << 20

# --- strategies ----------------------------------------------------------------------------------

_headers = st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=8)
_times = st.floats(min_value=0, max_value=1e6, allow_nan=False)
_ids = st.integers(min_value=0, max_value=2**63 - 1)

invocations = st.builds(
    Invocation,
    id=_ids,
    call_id=st.text(max_size=40),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    path=st.text(max_size=60),
    query=st.text(max_size=60),
    headers=_headers,
    body=st.binary(max_size=4096),
    timeout=_times,
)
results = st.builds(
    Result,
    id=_ids,
    status=st.integers(min_value=100, max_value=599),
    headers=_headers,
    body=st.binary(max_size=4096),
    error=st.one_of(st.none(), st.text(max_size=80)),
    seconds=_times,
)
messages = st.one_of(invocations, results)


def decode(message: dict[str, Any]) -> Invocation | Result:
    return Invocation.from_wire(message) if message["op"] == "invoke" else Result.from_wire(message)


def feed_in_pieces(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[dict[str, Any]]:
    """Feed `data` split at the given offsets (any order, repeats allowed), collecting messages."""
    out: list[dict[str, Any]] = []
    start = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        out.extend(decoder.feed(data[start:cut]))
        start = max(start, cut)
    return out


# --- round trips ---------------------------------------------------------------------------------


def test_an_invocation_survives_the_wire() -> None:
    sent = Invocation(
        id=7,
        call_id="c-1",
        method="POST",
        path="/orders/42",
        query="a=1&b=2",
        headers=[("Content-Type", "application/json"), ("X-Dup", "1"), ("X-Dup", "2")],
        body=b'{"qty": 3}',
        timeout=30.0,
    )
    (message,) = FrameDecoder(LIMIT).feed(encode(sent.to_wire()))
    assert message["op"] == "invoke"
    assert Invocation.from_wire(message) == sent


def test_a_failed_result_carries_its_error_and_status() -> None:
    sent = Result(id=9, status=500, headers=[], body=b"", error="KeyError: 'name'", seconds=0.002)
    (message,) = FrameDecoder(LIMIT).feed(encode(sent.to_wire()))
    assert message["op"] == "result"
    got = Result.from_wire(message)
    assert got == sent
    assert got.error == "KeyError: 'name'"


@given(sent=messages)
def test_any_message_round_trips(sent: Invocation | Result) -> None:
    (message,) = FrameDecoder(LIMIT).feed(encode(sent.to_wire()))
    got = decode(message)
    assert got == sent
    # Bodies stay bytes (never decoded as text) and headers keep their order and duplicates.
    assert isinstance(got.body, bytes)
    assert got.headers == sent.headers


@given(sent=st.lists(messages, min_size=1, max_size=6), cuts=st.lists(st.integers(0, 2**20)))
def test_messages_fed_in_arbitrary_pieces_come_out_whole_and_in_order(
    sent: list[Invocation | Result], cuts: list[int]
) -> None:
    stream = b"".join(encode(m.to_wire()) for m in sent)
    received = feed_in_pieces(FrameDecoder(LIMIT), stream, cuts)
    assert [decode(m) for m in received] == sent


@given(sent=st.lists(messages, min_size=1, max_size=4))
def test_messages_fed_one_byte_at_a_time_come_out_whole(sent: list[Invocation | Result]) -> None:
    frames = [encode(m.to_wire()) for m in sent]
    stream = b"".join(frames)
    ends = {sum(len(f) for f in frames[: i + 1]) for i in range(len(frames))}
    decoder = FrameDecoder(LIMIT)
    received: list[dict[str, Any]] = []
    for i in range(len(stream)):
        got = decoder.feed(stream[i : i + 1])
        # A message appears exactly when its last byte arrives, never earlier or later.
        assert len(got) == (1 if i + 1 in ends else 0)
        received.extend(got)
    assert [decode(m) for m in received] == sent


def test_an_incomplete_frame_yields_nothing_until_it_is_complete() -> None:
    frame = encode(Result(1, 200, [], b"x" * 100, None, 0.1).to_wire())
    decoder = FrameDecoder(LIMIT)
    assert decoder.feed(frame[:2]) == []
    assert decoder.feed(frame[2:-1]) == []
    (message,) = decoder.feed(frame[-1:])
    assert message["body"] == b"x" * 100


def test_feeding_nothing_yields_nothing() -> None:
    assert FrameDecoder(LIMIT).feed(b"") == []


def test_a_frame_is_a_big_endian_length_then_msgpack() -> None:
    frame = encode({"op": "ready", "pid": 12, "load_seconds": 0.5})
    (length,) = HEADER.unpack(frame[: HEADER.size])
    assert HEADER.size == 4
    assert length == len(frame) - 4
    assert msgpack.unpackb(frame[4:]) == {"op": "ready", "pid": 12, "load_seconds": 0.5}


def test_other_ops_pass_through_as_maps() -> None:
    decoder = FrameDecoder(LIMIT)
    stream = encode({"op": "ready", "pid": 3, "load_seconds": 0.25}) + encode(
        {"op": "load_failed", "error": "ImportError: no module named x"}
    )
    assert decoder.feed(stream) == [
        {"op": "ready", "pid": 3, "load_seconds": 0.25},
        {"op": "load_failed", "error": "ImportError: no module named x"},
    ]


# --- the size limit ------------------------------------------------------------------------------


def test_a_frame_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not() -> None:
    frame = encode({"op": "result", "body": b"x" * 1000})
    size = len(frame) - HEADER.size
    (message,) = FrameDecoder(size).feed(frame)
    assert message["body"] == b"x" * 1000
    with pytest.raises(ProtocolError):
        FrameDecoder(size - 1).feed(frame)


def test_a_frame_above_the_limit_is_rejected_naming_both_sizes() -> None:
    frame = encode({"op": "result", "body": b"x" * 2000})
    with pytest.raises(ProtocolError, match=rf"frame of {len(frame) - 4} bytes exceeds") as info:
        FrameDecoder(1000).feed(frame)
    assert "limit of 1000" in str(info.value)


def test_an_oversized_frame_is_rejected_from_its_header_alone() -> None:
    # A peer announcing 4 GiB must be refused at once, not after buffering what it sends.
    decoder = FrameDecoder(LIMIT)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decoder.feed(HEADER.pack(0xFFFFFFFF))


@given(
    size=st.integers(min_value=0, max_value=4096), limit=st.integers(min_value=0, max_value=4096)
)
def test_frames_are_accepted_exactly_up_to_the_limit(size: int, limit: int) -> None:
    payload = msgpack.packb({"op": "x", "pad": b"\0" * size})
    frame = HEADER.pack(len(payload)) + payload
    decoder = FrameDecoder(limit)
    if len(payload) <= limit:
        (message,) = decoder.feed(frame)
        assert message["op"] == "x"
    else:
        with pytest.raises(ProtocolError):
            decoder.feed(frame)


def test_a_frame_after_good_ones_is_checked_too() -> None:
    decoder = FrameDecoder(1000)
    good = encode({"op": "ready"})
    bad = encode({"op": "result", "body": b"x" * 2000})
    with pytest.raises(ProtocolError):
        decoder.feed(good + bad)


# --- garbage -------------------------------------------------------------------------------------


def frame_of(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # a byte msgpack never uses
        b"\x92\x01",  # an array of two with one element
        b"\x81\xa2op",  # a map missing its value
        b"\xa2\xff\xfe",  # a str that is not UTF-8
        b"\x81\xa2op\xa1x\x00",  # a whole map followed by trailing bytes
        b"",  # an empty frame
    ],
)
def test_undecodable_frames_are_rejected(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder(LIMIT).feed(frame_of(payload))


@pytest.mark.parametrize(
    "value",
    [
        [1, 2, 3],
        "invoke",
        42,
        None,
        b"op",
        {"id": 1, "status": 200},  # a map without an op
        {b"op": b"invoke"},  # a map whose keys are bytes, not strings
    ],
)
def test_frames_that_are_not_maps_with_an_op_are_rejected(value: object) -> None:
    with pytest.raises(ProtocolError, match="a frame must be a map with an 'op' key"):
        FrameDecoder(LIMIT).feed(frame_of(msgpack.packb(value, use_bin_type=True)))


def test_a_map_with_non_string_keys_is_rejected() -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder(LIMIT).feed(frame_of(msgpack.packb({1: "a", "op": "x"})))


def test_deeply_nested_frames_are_rejected_not_crashing() -> None:
    payload = b"\x91" * 100_000 + b"\x00"
    with pytest.raises(ProtocolError):
        FrameDecoder(LIMIT).feed(frame_of(payload))


@given(payload=st.binary(max_size=256))
def test_arbitrary_bytes_never_raise_anything_but_protocol_error(payload: bytes) -> None:
    decoder = FrameDecoder(LIMIT)
    try:
        for message in decoder.feed(frame_of(payload)):
            assert isinstance(message, dict)
            assert "op" in message
    except ProtocolError:
        pass


@given(noise=st.binary(min_size=4, max_size=512))
def test_a_raw_byte_stream_never_raises_anything_but_protocol_error(noise: bytes) -> None:
    # No framing at all: whatever the length prefix says, the decoder either waits for more,
    # refuses the size, or decodes/rejects the payload.
    decoder = FrameDecoder(256)
    try:
        for message in decoder.feed(noise):
            assert isinstance(message, dict)
    except ProtocolError:
        pass


# --- what a sandbox sends: checked in one place --------------------------------------------------

readies = st.builds(Ready, pid=st.integers(min_value=1, max_value=2**31), load_seconds=_times)
load_failures = st.builds(LoadFailed, error=st.text(max_size=80))
storage_calls = st.builds(
    StorageCall,
    id=_ids,
    call=st.sampled_from(STORAGE_CALLS),
    key=st.text(max_size=40),
    data=st.one_of(st.none(), st.binary(max_size=256)),
)
sandbox_messages = st.one_of(readies, load_failures, results, storage_calls)

# Anything msgpack encodes, nested; maps with keys of every kind msgpack has.
_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    _ints,
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
)
msgpack_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.binary(max_size=4)), inner, max_size=4),
        st.dictionaries(_ints, inner, max_size=2),
    ),
    max_leaves=12,
)
# Maps shaped like messages: a real one with a few fields dropped or replaced by values of any
# kind (some right), and keys of its own. These reach the check of each field, where arbitrary
# maps mostly stop at the op, and many are still valid.
_plausible = st.one_of(
    msgpack_values,
    _ids,
    _times,
    st.integers(min_value=100, max_value=599),
    st.sampled_from(["ready", "load_failed", "result", "storage", *STORAGE_CALLS]),
    _headers,
    st.lists(st.lists(st.one_of(st.text(max_size=5), _ints), max_size=3), max_size=3),
)


@st.composite
def message_like_maps(draw: st.DrawFn) -> dict[Any, Any]:
    wire: dict[Any, Any] = draw(sandbox_messages).to_wire()
    for name in draw(st.lists(st.sampled_from(sorted(wire)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del wire[name]
        else:
            wire[name] = draw(_plausible)
    extra = draw(st.dictionaries(st.one_of(st.text(max_size=8), _ints), msgpack_values, max_size=2))
    return {**extra, **wire}


def through_the_boundary(frame: bytes) -> list[SandboxMessage]:
    """What the worker makes of bytes from a sandbox: its messages, or ProtocolError."""
    return [from_sandbox(message) for message in FrameDecoder(LIMIT).feed(frame)]


def assert_message_or_protocol_error(frame: bytes) -> None:
    """The boundary's promise: whatever the bytes, a typed message or ProtocolError, nothing
    else (no KeyError, TypeError, ... that would end the worker's reader)."""
    try:
        decoded = through_the_boundary(frame)
    except ProtocolError:
        return
    for message in decoded:
        assert isinstance(message, Ready | LoadFailed | Result | StorageCall)
        # Its fields are of their types: sent again, it comes back the same.
        assert through_the_boundary(encode(message.to_wire())) == [message]


@given(sent=sandbox_messages)
def test_every_message_a_runtime_sends_decodes_as_itself(sent: SandboxMessage) -> None:
    assert through_the_boundary(encode(sent.to_wire())) == [sent]


@given(value=msgpack_values)
def test_any_msgpack_value_is_a_message_or_a_protocol_error(value: Any) -> None:
    assert_message_or_protocol_error(frame_of(msgpack.packb(value, use_bin_type=True)))


@given(value=message_like_maps())
def test_any_map_shaped_like_a_message_is_a_message_or_a_protocol_error(
    value: dict[str, Any],
) -> None:
    assert_message_or_protocol_error(frame_of(msgpack.packb(value, use_bin_type=True)))


@given(garbage=st.binary(max_size=256), framed=st.booleans())
def test_garbage_bytes_are_a_message_or_a_protocol_error(garbage: bytes, framed: bool) -> None:
    assert_message_or_protocol_error(frame_of(garbage) if framed else garbage)


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ({"op": "result"}, "malformed 'result' message: 'id' must be int, got nothing"),
        (
            {"op": "result", "id": [1], "status": 200, "headers": [], "body": b""},
            "malformed 'result' message: 'id' must be int, got list",
        ),
        (
            {"op": "result", "id": True, "status": 200, "headers": [], "body": b""},
            "'id' must be int, got bool True",
        ),
        (
            {"op": "result", "id": 1, "status": 200, "headers": [["a", 1]], "body": b""},
            "'headers' must be list[tuple[str, str]], got a list holding int 1",
        ),
        (
            {"op": "result", "id": 1, "status": 200, "headers": [], "body": "text"},
            "'body' must be bytes, got str 'text'",
        ),
        (
            {"op": "result", "id": 1, "status": 99, "headers": [], "body": b""},
            "'status' must be int from 100 to 599, got int 99",
        ),
        (
            {"op": "result", **Result(1, 200, [], b"", None, 0).to_wire(), "seconds": float("nan")},
            "'seconds' must be float, finite and >= 0, got float nan",
        ),
        ({"op": "storage", "id": 1, "call": "drop", "key": "k"}, "'call' must be one of 'get'"),
        ({"op": "ready", "pid": "1", "load_seconds": 0.1}, "'pid' must be int, got str '1'"),
        ({"op": "invoke", "id": 1}, "expected a message of ready, load_failed, result, storage"),
        ({"op": ["result"]}, "got a map with op ['result']"),
        ({"id": 1}, "got a map without an 'op'"),
        ([1, 2], "got list"),
    ],
)
def test_a_malformed_message_is_refused_naming_what_is_wrong(message: Any, says: str) -> None:
    with pytest.raises(ProtocolError) as info:
        from_sandbox(message)
    assert says in str(info.value)


@given(sent=sandbox_messages, data=st.data())
def test_a_field_missing_or_of_another_type_is_refused_naming_it(
    sent: SandboxMessage, data: st.DataObject
) -> None:
    wire = sent.to_wire()
    name = data.draw(st.sampled_from(sorted(set(wire) - {"op"})))
    # No field a sandbox sends is a map.
    with pytest.raises(ProtocolError, match=f"'{name}' must be"):
        from_sandbox({**wire, name: {"a": [1]}})
    if not (isinstance(sent, StorageCall) and name == "data"):  # the only optional one
        del wire[name]
        with pytest.raises(ProtocolError, match=f"'{name}' must be .*, got nothing"):
            from_sandbox(wire)


def test_an_int_where_seconds_go_is_taken_as_a_float() -> None:
    (ready,) = through_the_boundary(encode({"op": "ready", "pid": 7, "load_seconds": 2}))
    assert ready == Ready(pid=7, load_seconds=2.0)
    assert isinstance(ready, Ready) and type(ready.load_seconds) is float


def test_unknown_keys_are_ignored() -> None:
    # A newer runtime may say more; what this worker reads is still checked.
    wire = {**Result(3, 201, [("A", "b")], b"x", None, 0.5).to_wire(), "trace": [1, 2]}
    assert from_sandbox(wire) == Result(3, 201, [("A", "b")], b"x", None, 0.5)


# --- what the worker sends: checked by the runtime the same way ----------------------------------

storage_replies = st.builds(
    StorageReply,
    id=_ids,
    value=st.one_of(
        st.none(),
        st.binary(max_size=64),
        st.integers(min_value=0, max_value=2**63),
        st.booleans(),
        st.lists(st.text(max_size=10), max_size=4),
    ),
    error=st.one_of(st.none(), st.dictionaries(st.text(max_size=8), st.text(max_size=20))),
)


@given(sent=st.one_of(invocations, storage_replies))
def test_what_the_worker_sends_round_trips(sent: Invocation | StorageReply) -> None:
    (message,) = FrameDecoder(LIMIT).feed(encode(sent.to_wire()))
    assert type(sent).from_wire(message) == sent


@pytest.mark.parametrize(
    ("cls", "message", "says"),
    [
        (Invocation, {"op": "invoke", "id": 1}, "'call_id' must be str, got nothing"),
        (Invocation, {"op": "result", "id": 1}, "expected a 'invoke' message"),
        (StorageReply, {"op": "storage_reply", "id": 1, "value": 1.5}, "'value' must be"),
        (StorageReply, {"op": "storage_reply", "id": 1, "value": ["a", 2]}, "a list holding int"),
    ],
)
def test_from_wire_refuses_a_malformed_message(
    cls: type[Invocation | StorageReply], message: dict[str, Any], says: str
) -> None:
    with pytest.raises(ProtocolError, match=re.escape(says)):
        cls.from_wire(message)


# --- the hot messages' fast checks agree with the schema ----------------------------------------


def _decided(decode: Any, message: Any) -> object:
    """What decoding `message` gives: the message, or the ProtocolError's text."""
    try:
        return decode(message)
    except ProtocolError as exc:
        return f"ProtocolError: {exc}"


@st.composite
def hot_message_like_maps(draw: st.DrawFn) -> dict[Any, Any]:
    """An invocation's or a result's map with a few fields dropped or replaced by values of
    any kind (ints where floats go, tuples for pairs, NaN seconds, statuses out of range)."""
    wire: dict[Any, Any] = draw(messages).to_wire()
    for name in draw(st.lists(st.sampled_from(sorted(wire)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del wire[name]
        else:
            wire[name] = draw(
                st.one_of(
                    _plausible,
                    st.floats(),
                    st.integers(min_value=0, max_value=1000),
                    st.lists(st.tuples(st.text(max_size=3), st.text(max_size=3)), max_size=2),
                    st.lists(st.lists(st.text(max_size=3), max_size=3), max_size=2),
                )
            )
    return wire


@given(message=hot_message_like_maps())
def test_the_fast_checks_accept_and_refuse_exactly_as_the_schema_does(
    message: dict[str, Any],
) -> None:
    for cls in (Invocation, Result):
        fast, cls._fast = cls._fast, None
        try:
            by_schema = _decided(cls.from_wire, message)
        finally:
            cls._fast = fast
        assert _decided(cls.from_wire, message) == by_schema
    assert _decided(from_sandbox, message) == _decided(
        lambda m: Result(*_fields(Result, m)) if m.get("op") == "result" else from_sandbox(m),
        message,
    )
