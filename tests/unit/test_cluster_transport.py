"""The cluster transport's rules without a socket: the handshake of both ends wired to each
other, the request and reply frames through the project's FrameDecoder, and what is refused."""

from __future__ import annotations

import hmac
from typing import Any

import pytest

from faasd_py.cluster._transport import (
    NONCE_SIZE,
    ClientHandshake,
    HandshakeFailed,
    PeerUnreachable,
    RemoteError,
    ServerHandshake,
    error_frame,
    parse_reply,
    parse_request,
    reply_frame,
    request_frame,
)
from faasd_py.protocol import FrameDecoder, ProtocolError, encode

LIMIT = 1 << 20


def mac(secret: bytes) -> Any:
    return lambda data: hmac.new(secret, data, "sha256").digest()


KEY = mac(b"k" * 32)
OTHER = mac(b"x" * 32)


def wire(message: dict[str, Any]) -> dict[str, Any]:
    """`message` as the peer decodes it: through a frame and back."""
    (decoded,) = FrameDecoder(LIMIT, require_op=False).feed(encode(message))
    return decoded


def shake(client_key: Any, server_key: Any) -> tuple[ClientHandshake, ServerHandshake]:
    """Runs a handshake to its end; raises HandshakeFailed where either end refuses."""
    server, client = ServerHandshake(server_key), ClientHandshake(client_key)
    answer = client.answer(wire(server.hello()))
    try:
        reply = server.answer(wire(answer))
    except HandshakeFailed as exc:
        reply = ServerHandshake.refusal(str(exc))
    client.verify(wire(reply))
    return client, server


def test_ends_with_the_same_key_complete_the_handshake() -> None:
    client, server = shake(KEY, KEY)
    assert len(client.nonce) == len(server.nonce) == NONCE_SIZE
    assert client.nonce != server.nonce


def test_a_client_with_another_key_is_refused_with_the_reason() -> None:
    server = ServerHandshake(KEY)
    answer = ClientHandshake(OTHER).answer(wire(server.hello()))
    with pytest.raises(HandshakeFailed, match="the cluster key does not match"):
        server.answer(wire(answer))


def test_the_client_reads_the_refusal_as_a_key_mismatch_and_what_to_do() -> None:
    with pytest.raises(HandshakeFailed) as caught:
        shake(OTHER, KEY)
    assert "the cluster key does not match" in str(caught.value)
    assert "same cluster secret" in str(caught.value)


def test_a_server_without_the_key_is_found_out_by_the_client() -> None:
    """An impostor that accepts every client still cannot prove the key."""
    client = ClientHandshake(KEY)
    impostor = ServerHandshake(OTHER)
    client.answer(wire(impostor.hello()))
    forged = {"proof": OTHER(b"anything")}
    with pytest.raises(HandshakeFailed, match="the cluster key does not match"):
        client.verify(wire(forged))


def test_the_client_s_proof_reflected_back_is_not_a_server_proof() -> None:
    client = ClientHandshake(KEY)
    answer = client.answer(wire(ServerHandshake(KEY).hello()))
    with pytest.raises(HandshakeFailed):
        client.verify(wire({"proof": answer["proof"]}))


def test_a_proof_for_one_server_nonce_does_not_pass_another() -> None:
    """Fresh nonces: a recorded answer cannot be replayed to a new connection."""
    first, second = ServerHandshake(KEY), ServerHandshake(KEY)
    recorded = ClientHandshake(KEY).answer(wire(first.hello()))
    first.answer(wire(recorded))
    with pytest.raises(HandshakeFailed):
        second.answer(wire(recorded))


@pytest.mark.parametrize(
    "hello",
    [
        {"hello": "faasd-py rpc v2", "nonce": b"n" * NONCE_SIZE},
        {"hello": "faasd-py rpc v1", "nonce": b"short"},
        {"hello": "faasd-py rpc v1", "nonce": "n" * NONCE_SIZE},
        {"op": "ready"},
    ],
)
def test_a_peer_that_is_not_a_worker_of_this_version_is_named_so(hello: dict[str, Any]) -> None:
    with pytest.raises(HandshakeFailed, match="not a faasd-py worker"):
        ClientHandshake(KEY).answer(hello)


@pytest.mark.parametrize(
    "answer",
    [{}, {"nonce": b"n" * NONCE_SIZE}, {"nonce": b"n", "proof": b"p"}, {"nonce": 1, "proof": 2}],
)
def test_a_malformed_answer_is_refused(answer: dict[str, Any]) -> None:
    with pytest.raises(HandshakeFailed, match="malformed"):
        ServerHandshake(KEY).answer(answer)


def test_a_request_round_trips_with_bytes_and_nested_maps() -> None:
    args = {"body": b"\x00\xff" * 10, "headers": [["a", "b"]], "deep": {"x": {"y": [1, b"z"]}}}
    assert parse_request(wire_frame(request_frame(7, "invoke", args))) == (7, "invoke", args)


def test_replies_round_trip() -> None:
    assert parse_reply(wire_frame(reply_frame(3, {"body": b"\x01"}))) == (3, {"body": b"\x01"})
    id_, error = parse_reply(wire_frame(error_frame(4, 404, "function f not found")))
    assert id_ == 4
    assert isinstance(error, RemoteError)
    assert (error.status, error.message) == (404, "function f not found")


def wire_frame(frame: bytes) -> dict[str, Any]:
    (decoded,) = FrameDecoder(LIMIT, require_op=False).feed(frame)
    return decoded


@pytest.mark.parametrize(
    "message",
    [
        {"op": "x", "args": {}},
        {"id": "1", "op": "x", "args": {}},
        {"id": 1, "op": 2, "args": {}},
        {"id": 1, "op": "x", "args": []},
        {"id": 1, "ok": {}},
    ],
)
def test_a_malformed_request_is_a_protocol_error(message: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="a request must be"):
        parse_request(message)


@pytest.mark.parametrize(
    "message",
    [
        {"ok": {}},
        {"id": 1},
        {"id": 1, "ok": [1]},
        {"id": 1, "error": {"status": 404}},
        {"id": 1, "error": {"status": 200, "message": "fine?"}},
        {"id": 1, "error": "boom"},
        {"id": 1.0, "ok": {}},
        {"id": True, "ok": {}},
    ],
)
def test_a_malformed_reply_is_a_protocol_error(message: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="a reply must be"):
        parse_reply(message)


def test_frames_of_the_transport_need_no_op_but_must_be_maps() -> None:
    decoder = FrameDecoder(LIMIT, require_op=False)
    assert decoder.feed(encode({"id": 1, "ok": {}})) == [{"id": 1, "ok": {}}]
    with pytest.raises(ProtocolError, match="a frame must be a map"):
        decoder.feed(b"\x00\x00\x00\x01\x01")  # the integer 1


def test_the_sandbox_channels_still_require_an_op() -> None:
    with pytest.raises(ProtocolError, match="with an 'op' key"):
        FrameDecoder(LIMIT).feed(encode({"id": 1, "ok": {}}))


def test_a_frame_above_the_limit_is_refused_from_its_header_alone() -> None:
    frame = reply_frame(1, {"body": b"x" * 100})
    decoder = FrameDecoder(50, require_op=False)
    with pytest.raises(ProtocolError, match="exceeds the limit of 50"):
        decoder.feed(frame[:4])


def test_errors_carry_their_status() -> None:
    assert PeerUnreachable("worker w at h:1: gone", worker="w", address="h:1").status == 502
    assert RemoteError("busy", 429).status == 429
    assert RemoteError("busy", 429).message == "busy"
