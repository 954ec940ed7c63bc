"""Who owns a key of an app spread over workers (rendezvous hashing), and what a worker's
CachePeers makes of the placements: deterministic, only a leaving worker's keys move, a joining
worker takes only keys, a roughly even spread; an app on one worker has no owner elsewhere."""

from __future__ import annotations

import hmac
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faasd_py.cluster._peers import CachePeers, owner

names = st.text(min_size=1, max_size=12)
workers_st = st.lists(names, min_size=1, max_size=8, unique=True)
keys = st.text(max_size=40)


@given(keys, workers_st, st.randoms(use_true_random=False))
def test_the_owner_is_one_of_the_workers_whatever_their_order(
    key: str, workers: list[str], rnd: random.Random
) -> None:
    chosen = owner(key, workers)
    assert chosen in workers
    shuffled = list(workers)
    rnd.shuffle(shuffled)
    assert owner(key, shuffled) == chosen
    assert owner(key, tuple(workers)) == chosen


@given(keys, workers_st.filter(lambda w: len(w) >= 2), st.data())
def test_only_the_leaving_workers_keys_move(
    key: str, workers: list[str], data: st.DataObject
) -> None:
    leaving = data.draw(st.sampled_from(workers))
    before = owner(key, workers)
    after = owner(key, [w for w in workers if w != leaving])
    if before != leaving:
        assert after == before
    else:
        assert after != leaving


@given(keys, workers_st, names)
def test_a_joining_worker_takes_keys_from_no_one_else(
    key: str, workers: list[str], joining: str
) -> None:
    if joining in workers:
        return
    assert owner(key, [*workers, joining]) in (owner(key, workers), joining)


@given(st.lists(names, min_size=2, max_size=5, unique=True))
def test_keys_spread_roughly_evenly(workers: list[str]) -> None:
    n = 2000
    shares = Counter(owner(f"object-{i}", workers) for i in range(n))
    even = n / len(workers)
    # About ten standard deviations either side: a bad hash fails, chance does not.
    for worker in workers:
        assert 0.6 * even <= shares[worker] <= 1.4 * even, shares


def test_no_workers_is_a_bug_of_the_caller() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        owner("k", [])


def test_a_moved_share_is_about_one_over_n() -> None:
    workers = ["w1", "w2", "w3", "w4"]
    ks = [f"k{i}" for i in range(4000)]
    moved = sum(owner(k, workers) != owner(k, workers[:3]) for k in ks)
    assert moved == sum(owner(k, workers) == "w4" for k in ks)
    assert 0.15 < moved / len(ks) < 0.35


def key(data: bytes) -> bytes:
    return hmac.new(b"k" * 32, data, "sha256").digest()


def peers_of(name: str) -> CachePeers:
    return CachePeers(name, key, max_frame=1 << 20)


ADDRESSES = {"a": "10.0.0.1:7000", "b": "10.0.0.2:7000", "c": "10.0.0.3:7000"}


def test_an_app_on_one_worker_has_no_owner_elsewhere() -> None:
    peers = peers_of("a")
    peers.update({"shop": ("a",)}, ADDRESSES)
    assert all(peers.owner("shop", f"k{i}") is None for i in range(100))
    assert peers.owner("unplaced", "k") is None


def test_a_spread_app_keys_are_owned_by_its_workers_and_agreed_on() -> None:
    placements = {"shop": ("a", "b", "c")}
    views = {name: peers_of(name) for name in ("a", "b", "c")}
    for peers in views.values():
        peers.update(placements, ADDRESSES)
    owners: Counter[str] = Counter()
    for i in range(300):
        k = f"k{i}"
        expected = owner(f"shop\0{k}", ("a", "b", "c"))
        owners[expected] += 1
        for name, peers in views.items():
            # Each worker names the same owner, or None when it is the owner itself.
            assert peers.owner("shop", k) == (None if name == expected else expected)
    assert set(owners) == {"a", "b", "c"}


def test_workers_without_a_live_lease_own_nothing() -> None:
    peers = peers_of("a")
    peers.update({"shop": ("a", "b")}, {"a": ADDRESSES["a"]})  # b's lease ran out
    assert peers.workers_of("shop") == ("a",)
    assert all(peers.owner("shop", f"k{i}") is None for i in range(100))


def test_a_worker_not_placed_with_the_app_asks_no_one() -> None:
    peers = peers_of("c")
    peers.update({"shop": ("a", "b")}, ADDRESSES)
    assert all(peers.owner("shop", f"k{i}") is None for i in range(100))
