"""The pure parts of the storage limits: an app's quota, and the bound on an instance's calls in
flight (no loop, no store)."""

from __future__ import annotations

import pytest

from faasd_py.cache import InflightBound, StorageLimits
from faasd_py.errors import SpecError
from faasd_py.spec import FunctionSpec, check_settings
from faasd_py.storage import (
    ANNOTATION_MAX_BYTES,
    ANNOTATION_MAX_KEYS,
    BadQuotaAnnotation,
    Quota,
    Usage,
    quota_of,
)

QUOTA = Quota(max_bytes=100, max_keys=3)


def test_a_put_fits_up_to_the_quota_and_not_past_it() -> None:
    assert QUOTA.refusal(Usage(90, 2), None, 10) is None  # exactly full
    assert QUOTA.refusal(Usage(90, 2), None, 11) == "bytes"
    assert QUOTA.refusal(Usage(10, 3), None, 1) == "keys"
    assert QUOTA.refusal(Usage(10, 3), 5, 6) is None  # an overwrite adds no key


def test_an_app_over_a_lowered_quota_can_still_shrink() -> None:
    over = Usage(150, 5)
    assert QUOTA.refusal(over, 40, 10) is None  # smaller than what it replaces
    assert QUOTA.refusal(over, 40, 40) is None  # the same size: no growth
    assert QUOTA.refusal(over, 40, 41) == "bytes"
    assert QUOTA.refusal(over, None, 0) == "keys"


def test_the_error_names_the_quota_and_how_to_raise_it() -> None:
    error = QUOTA.exceeded("shop", "bytes", Usage(90, 2), 11)
    assert error.status == 507 and (error.quota, error.limit) == ("bytes", 100)
    assert "storage quota of app shop exceeded" in error.message
    assert "90 bytes of its quota of 100" in error.message
    assert ANNOTATION_MAX_BYTES in error.message and "--storage-max-bytes" in error.message
    error = QUOTA.exceeded("shop", "keys", Usage(10, 3), 1)
    assert (error.quota, error.limit) == ("keys", 3)
    assert ANNOTATION_MAX_KEYS in error.message and "--storage-max-keys" in error.message


def test_annotations_set_a_functions_own_quota() -> None:
    assert quota_of({}, QUOTA) == QUOTA
    assert quota_of({ANNOTATION_MAX_BYTES: "10Gi"}, QUOTA) == Quota(10 * 1024**3, 3)
    assert quota_of({ANNOTATION_MAX_KEYS: " 500000 "}, QUOTA) == Quota(100, 500_000)


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (ANNOTATION_MAX_BYTES, "lots"),
        (ANNOTATION_MAX_BYTES, "0"),
        (ANNOTATION_MAX_KEYS, "-1"),
        (ANNOTATION_MAX_KEYS, "1e6"),
    ],
)
def test_a_malformed_quota_annotation_is_refused_at_deploy_naming_it(
    annotation: str, value: str
) -> None:
    with pytest.raises(BadQuotaAnnotation):
        quota_of({annotation: value}, QUOTA)
    spec = FunctionSpec(service="f", image="f:latest", annotations={annotation: value})
    with pytest.raises(SpecError) as caught:
        check_settings(spec)
    assert caught.value.status == 400
    assert caught.value.field == f"annotations.{annotation}"
    assert repr(value) in caught.value.message


def test_the_bound_closes_at_its_calls_or_its_bytes_and_opens_as_they_finish() -> None:
    bound = InflightBound(max_calls=2, max_bytes=100)
    assert bound.open
    bound.take(10)
    assert bound.open
    bound.take(10)
    assert not bound.open  # two calls
    bound.finish(10)
    assert bound.open
    bound.take(200)  # one call larger than the bound still goes through, alone
    assert not bound.open
    bound.finish(200)
    bound.finish(10)
    bound.take(0)
    bound.hold(100)  # a reply being sent counts too
    assert not bound.open
    bound.release(100)
    assert bound.open
    stats = bound.statistics()
    assert (stats.calls, stats.peak_calls, stats.peak_bytes, stats.calls_total) == (1, 2, 210, 4)


def test_a_bound_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 call"):
        InflightBound(0, 100)


def test_what_the_worker_holds_for_an_instance_counts_against_its_memory_limit() -> None:
    limits = StorageLimits(calls_in_flight=16, bytes_in_flight=64 * 2**20)
    assert limits.bound().max_bytes == 64 * 2**20
    assert limits.bound(memory_limit=32 * 2**20).max_bytes == 32 * 2**20  # a 32Mi function
    assert limits.bound(memory_limit=2**30).max_bytes == 64 * 2**20  # the worker's own cap
    assert limits.bound(memory_limit=32 * 2**20).max_calls == 16
