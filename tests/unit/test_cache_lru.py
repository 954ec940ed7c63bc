"""PinnedLRU: eviction order, versions, bypass, and the invariants under any sequence of calls."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from faasd_py.cache import PinnedLRU


def test_lookup_hits_only_on_the_exact_version_and_drops_a_stale_entry() -> None:
    lru = PinnedLRU(capacity=100, bypass_bytes=50)
    assert lru.insert("k", 3, b"abc").cached
    assert lru.lookup("k", 3) == b"abc"
    assert lru.lookup("k", 4) is None
    assert "k" not in lru and lru.size == 0


def test_an_older_version_never_replaces_a_newer_one() -> None:
    lru = PinnedLRU(capacity=100, bypass_bytes=50)
    lru.insert("k", 5, b"new")
    outcome = lru.insert("k", 4, b"old")
    assert not outcome.cached and outcome.reason == "older"
    assert lru.lookup("k", 5) == b"new"


def test_least_recently_used_goes_first() -> None:
    lru = PinnedLRU(capacity=30, bypass_bytes=30)
    for key in "abc":
        lru.insert(key, 1, b"x" * 10)
    lru.lookup("a", 1)  # b is now the oldest
    outcome = lru.insert("d", 1, b"x" * 10)
    assert outcome.evicted == ("b",)
    assert lru.in_order() == ["c", "a", "d"]
    assert lru.statistics().evictions == 1


def test_large_objects_bypass_and_invalidate_what_was_cached() -> None:
    lru = PinnedLRU(capacity=1000, bypass_bytes=10)
    lru.insert("k", 1, b"small")
    outcome = lru.insert("k", 2, b"x" * 11)
    assert not outcome.cached and outcome.reason == "bypass"
    assert "k" not in lru
    assert lru.statistics().bypassed == 1


def test_a_pinned_entry_survives_eviction_and_goes_once_released() -> None:
    lru = PinnedLRU(capacity=20, bypass_bytes=20)
    lru.insert("a", 1, b"x" * 10)
    assert lru.pin("a")
    lru.insert("b", 1, b"x" * 10)
    outcome = lru.insert("c", 1, b"x" * 10)
    assert outcome.evicted == ("b",)
    assert "a" in lru
    assert lru.resize(5) == ("c",)
    assert "a" in lru and lru.size > lru.capacity  # over budget only because of the pin
    assert lru.unpin("a") == ("a",)
    assert lru.size == 0


def test_pinned_entries_keep_their_place_when_an_eviction_steps_over_them() -> None:
    lru = PinnedLRU(capacity=40, bypass_bytes=40)
    for key in "abcd":
        lru.insert(key, 1, b"x" * 10)
    assert lru.pin("a") and lru.pin("c")
    assert lru.insert("e", 1, b"x" * 20).evicted == ("b", "d")
    assert lru.in_order() == ["a", "c", "e"]  # still the oldest, in their order
    lru.unpin("a")
    lru.unpin("c")
    assert lru.insert("f", 1, b"x" * 10).evicted == ("a",)


def test_an_entry_stays_pinned_until_its_last_reader_releases_it() -> None:
    lru = PinnedLRU(capacity=20, bypass_bytes=20)
    lru.insert("a", 1, b"x" * 10)
    assert lru.pin("a") and lru.pin("a")  # two readers send "a" at once
    lru.insert("b", 1, b"x" * 10)
    assert lru.unpin("a") == ()  # the first is done; the second still reads "a"
    assert lru.is_pinned("a") and lru.statistics().pinned_entries == 1
    assert lru.resize(5) == ("b",)
    assert "a" in lru
    assert lru.unpin("a") == ("a",)  # the last reader is done: now it may go
    assert not lru.is_pinned("a") and len(lru) == 0


def test_an_insert_with_every_other_entry_pinned_reports_no_room() -> None:
    lru = PinnedLRU(capacity=10, bypass_bytes=10)
    lru.insert("a", 1, b"x" * 10)
    lru.pin("a")
    outcome = lru.insert("b", 1, b"x" * 5)
    assert not outcome.cached and outcome.reason == "no room"
    assert lru.in_order() == ["a"]


def test_pinning_an_absent_key_pins_nothing() -> None:
    lru = PinnedLRU(capacity=10, bypass_bytes=10)
    assert not lru.pin("nope")
    assert lru.unpin("nope") == ()


KEYS = st.sampled_from(list("abcdefgh"))
OPS = st.one_of(
    st.tuples(st.just("insert"), KEYS, st.integers(0, 6), st.integers(0, 40)),
    st.tuples(st.just("lookup"), KEYS, st.integers(0, 6), st.just(0)),
    st.tuples(st.just("pin"), KEYS, st.just(0), st.just(0)),
    st.tuples(st.just("unpin"), KEYS, st.just(0), st.just(0)),
    st.tuples(st.just("discard"), KEYS, st.just(0), st.just(0)),
    st.tuples(st.just("resize"), KEYS, st.just(0), st.integers(0, 120)),
)


@settings(max_examples=300)
@given(capacity=st.integers(0, 100), bypass=st.integers(0, 50), ops=st.lists(OPS, max_size=80))
def test_invariants_hold_after_every_call(
    capacity: int, bypass: int, ops: list[tuple[str, str, int, int]]
) -> None:
    lru = PinnedLRU(capacity, bypass)
    pins: dict[str, int] = {}
    versions: dict[str, int] = {}
    for op, key, version, n in ops:
        pinned_before = {k for k in lru.in_order() if pins.get(k, 0) > 0}
        if op == "insert":
            data = bytes([version]) * n
            outcome = lru.insert(key, version, data)
            assert set(outcome.evicted).isdisjoint(pinned_before)
            if outcome.cached:
                versions[key] = version
            pinned_before.discard(key)  # replaced by this write (or dropped: bypass)
        elif op == "lookup":
            got = lru.lookup(key, version)
            if got is not None:
                assert versions[key] == version and got == bytes([version]) * len(got)
            else:
                pinned_before.discard(key)  # a stale entry is invalidated, pinned or not
        elif op == "pin":
            if lru.pin(key):
                pins[key] = pins.get(key, 0) + 1
        elif op == "unpin":
            lru.unpin(key)
            pins[key] = max(0, pins.get(key, 0) - 1)
            if pins[key] == 0:  # its last release may evict it at once, if over budget
                pinned_before.discard(key)
        elif op == "discard":
            lru.discard(key)
            pinned_before.discard(key)
        else:
            lru.resize(n)
        keys = lru.in_order()
        # Pinned entries are never evicted.
        assert pinned_before <= set(keys)
        # The byte count is exact; over budget only when nothing left can be evicted.
        stats = lru.statistics()
        assert stats.bytes == sum(len(lru.lookup(k, lru.version_of(k) or 0) or b"") for k in keys)
        if stats.bytes > stats.capacity:
            assert all(pins.get(k, 0) > 0 for k in keys)
        # Nothing above the bypass threshold is ever cached.
        assert all(len(lru.lookup(k, lru.version_of(k) or 0) or b"") <= bypass for k in keys)
