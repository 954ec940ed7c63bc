"""The gateway's call ids: what a caller without an X-Call-Id of its own is given."""

from __future__ import annotations

import uuid

from faasd_py.gateway._invoke import new_call_id, new_trace


def test_call_ids_are_version_4_uuids_in_their_text_form() -> None:
    for _ in range(1000):
        call_id = new_call_id()
        parsed = uuid.UUID(call_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == call_id


def test_call_ids_do_not_repeat() -> None:
    assert len({new_call_id() for _ in range(50_000)}) == 50_000


def test_a_callers_own_call_id_is_kept() -> None:
    assert new_trace("my-id-1", 1.5)["X-Call-Id"] == "my-id-1"
    assert uuid.UUID(new_trace(None, 1.5)["X-Call-Id"]).version == 4
