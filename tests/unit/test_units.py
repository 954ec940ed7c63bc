"""The quantities users write in stack.yml and FAASD_* variables: sizes, CPU, durations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faasd_py.units import parse_cpu, parse_duration, parse_size

# --- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", 512),
        ("0", 0),
        ("4k", 4000),
        ("4K", 4000),
        ("1M", 1_000_000),
        ("1G", 1_000_000_000),
        ("1T", 1_000_000_000_000),
        ("128Mi", 128 * 2**20),
        ("1Ki", 1024),
        ("2Gi", 2 * 2**30),
        ("1Ti", 2**40),
        ("1.5Ki", 1536),
        ("0.5Mi", 2**19),
        (" 128Mi ", 128 * 2**20),
        ("128 Mi", 128 * 2**20),
        # Lower-case forms as typed on a command line.
        ("10mb", 10_000_000),
        ("10MB", 10_000_000),
        ("10mib", 10 * 2**20),
        ("10MiB", 10 * 2**20),
        ("1gib", 2**30),
        ("3kb", 3000),
        ("3kib", 3072),
        (4096, 4096),
        (0, 0),
    ],
)
def test_parse_size_accepts_kubernetes_quantities(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "Mi", "lots", "-5", "-1Mi", "1e3", "1,000", "1.Mi", "1 2"])
def test_parse_size_rejects_malformed_text_showing_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected a size such as 128Mi, 1G or 4096") as info:
        parse_size(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["10m", "10Xi", "10KI", "10bytes", "5ki"])
def test_parse_size_rejects_unknown_suffixes_naming_the_suffix(text: str) -> None:
    # "m" is milli in Kubernetes: a size of 10 milli-bytes is a mistake, not 10 MB.
    with pytest.raises(ValueError, match="unknown size suffix") as info:
        parse_size(text)
    message = str(info.value)
    assert "use Ki, Mi, Gi, K, M or G" in message
    assert repr(text) in message


def test_parse_size_rejects_negative_integers() -> None:
    with pytest.raises(ValueError, match="size must not be negative, got -1"):
        parse_size(-1)


def test_parse_size_does_not_take_a_boolean_for_a_number() -> None:
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(True)


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


_ALL = {**_BINARY, **_DECIMAL}


@given(n=st.integers(min_value=0), suffix=st.sampled_from(sorted(_ALL)))
def test_suffixes_multiply_exactly_at_any_magnitude(n: int, suffix: str) -> None:
    assert parse_size(f"{n}{suffix}") == n * _ALL[suffix]


@given(
    whole=st.integers(min_value=0, max_value=10**12),
    digits=st.from_regex(r"[0-9]{1,6}", fullmatch=True),
    suffix=st.sampled_from(sorted(_ALL)),
)
def test_fractional_quantities_round_down_to_whole_bytes(
    whole: int, digits: str, suffix: str
) -> None:
    exact_numerator = (whole * 10 ** len(digits) + int(digits)) * _ALL[suffix]
    assert parse_size(f"{whole}.{digits}{suffix}") == exact_numerator // 10 ** len(digits)


@given(n=st.integers(min_value=0))
def test_plain_numbers_are_bytes_whether_given_as_text_or_int(n: int) -> None:
    assert parse_size(str(n)) == parse_size(n) == n


@given(n=st.integers(min_value=0, max_value=2**30), suffix=st.sampled_from(["Mi", "Gi", "M", "G"]))
def test_larger_quantities_give_larger_sizes(n: int, suffix: str) -> None:
    assert parse_size(f"{n + 1}{suffix}") > parse_size(f"{n}{suffix}")


def test_parse_size_is_exact_for_huge_integers() -> None:
    assert parse_size("9007199254740993") == 2**53 + 1


# --- CPU -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500m", 0.5),
        ("100m", 0.1),
        ("1m", 0.001),
        ("1500m", 1.5),
        ("0.5", 0.5),
        ("2", 2.0),
        (" 250m ", 0.25),
        (2, 2.0),
        (0.25, 0.25),
    ],
)
def test_parse_cpu_accepts_kubernetes_cpu_quantities(text: str | float, expected: float) -> None:
    assert parse_cpu(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "m", "half", "1 core", "500mm", "1Ki", True])
def test_parse_cpu_rejects_malformed_text_showing_the_accepted_forms(text: str | bool) -> None:
    with pytest.raises(ValueError, match=r"expected a CPU quantity such as 500m, 0.5 or 2"):
        parse_cpu(text)


@pytest.mark.parametrize("text", ["0", "0m", "-1", "-500m", 0, -0.5])
def test_parse_cpu_rejects_zero_and_negative(text: str | float) -> None:
    with pytest.raises(ValueError, match="CPU quantity must be positive"):
        parse_cpu(text)


@given(millis=st.integers(min_value=1, max_value=10**6))
def test_millicores_are_thousandths_of_a_core(millis: int) -> None:
    assert parse_cpu(f"{millis}m") == pytest.approx(millis / 1000)
    assert parse_cpu(f"{millis}m") == pytest.approx(parse_cpu(str(millis / 1000)))


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN", "infm", "1e999"])
def test_parse_cpu_rejects_non_finite_numbers(text: str) -> None:
    with pytest.raises(ValueError, match="expected a finite CPU quantity") as info:
        parse_cpu(text)
    assert repr(text) in str(info.value)


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", 30.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1h2m3s", 3723.0),
        ("1.5h", 5400.0),
        ("2m", 120.0),
        ("100us", 1e-4),
        ("100µs", 1e-4),
        ("500ns", 5e-7),
        ("1s500ms", 1.5),
        (" 30s ", 30.0),
        ("30", 30.0),
        ("0.5", 0.5),
        ("0", 0.0),
        (30, 30.0),
        (1.5, 1.5),
    ],
)
def test_parse_duration_accepts_go_style_durations_and_seconds(
    text: str | float, expected: float
) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["", "s", "thirty", "30 s", "30sec", "1d", "-1s", "1m 30s", "30s!", "m30", True]
)
def test_parse_duration_rejects_malformed_text_showing_the_accepted_forms(
    text: str | bool,
) -> None:
    with pytest.raises(
        ValueError, match=r"expected a duration such as 30s, 250ms or 1m30s"
    ) as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["-1", "-0.5", -1, -2.5])
def test_parse_duration_rejects_negative_seconds(text: str | float) -> None:
    with pytest.raises(ValueError, match="duration must not be negative"):
        parse_duration(text)


_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


@given(
    parts=st.lists(
        st.tuples(
            st.one_of(
                st.integers(min_value=0, max_value=10**6).map(str),
                st.integers(min_value=0, max_value=10**7).map(
                    lambda k: f"{k // 1000}.{k % 1000:03d}"
                ),
            ),
            st.sampled_from(sorted(_UNIT_SECONDS)),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_a_duration_is_the_sum_of_its_parts(parts: list[tuple[str, str]]) -> None:
    text = "".join(number + unit for number, unit in parts)
    expected = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    assert parse_duration(text) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@given(seconds=st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_plain_seconds_round_trip(seconds: float) -> None:
    assert parse_duration(repr(seconds)) == seconds
    assert parse_duration(seconds) == seconds


@given(
    h=st.integers(min_value=0, max_value=1000),
    m=st.integers(min_value=0, max_value=59),
    s=st.integers(min_value=0, max_value=59),
)
def test_hours_minutes_seconds_agree_with_plain_seconds(h: int, m: int, s: int) -> None:
    assert parse_duration(f"{h}h{m}m{s}s") == parse_duration(str(h * 3600 + m * 60 + s))


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN", "1e999", float("inf"), float("nan")])
def test_parse_duration_rejects_non_finite_numbers(text: str | float) -> None:
    with pytest.raises(ValueError, match="expected a finite duration") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)
