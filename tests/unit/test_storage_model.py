"""The storage latency model of benchmarks (pure), its transfer rates, and its `up` options."""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from faasd_py.cli import cli
from faasd_py.config import Config
from faasd_py.storage import LatencyModel, parse_bandwidth


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


# --- transfer rates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50MB/s", 50e6),
        ("50 MB / s", 50e6),
        ("50M", 50e6),
        ("60MiB/s", 60 * 1024**2),
        ("60mib/s", 60 * 1024**2),
        ("1.5GB/s", 1.5e9),
        ("1000000", 1e6),
        ("2.5e6", 2.5e6),
        (1e6, 1e6),
    ],
)
def test_bandwidth_is_bytes_per_second(text: str | float, expected: float) -> None:
    assert parse_bandwidth(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", [None, "", "off", "OFF", "none", "0", 0])
def test_no_bandwidth_is_off(text: str | int | None) -> None:
    assert parse_bandwidth(text) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fast", "expected a transfer rate such as 50MB/s"),
        ("-5MB/s", "expected a transfer rate such as 50MB/s"),
        ("50Mbps", "expected a transfer rate such as 50MB/s"),
        # Bits to a network engineer, bytes to a size parser: refused, not guessed.
        ("400Mbit/s", "a transfer rate is in bytes"),
        ("50Mb/s", "a transfer rate is in bytes"),
        ("-1", "above 0 bytes/s"),
        ("inf", "above 0 bytes/s"),
        ("nan", "above 0 bytes/s"),
    ],
)
def test_a_bad_bandwidth_names_the_accepted_forms(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bandwidth(text)


# --- the model ----------------------------------------------------------------------------------


def test_the_default_model_adds_nothing() -> None:
    model = LatencyModel()
    assert not model.on
    assert model.data_call(10**9) == 0.0 and model.metadata_latency == 0.0
    assert model.describe() == ""


def test_the_conservative_model_charges_version_checks_like_data_calls() -> None:
    model = LatencyModel(0.005)
    assert model.metadata_latency == 0.005
    assert model.data_call(1_500_000) == 0.005  # size is free without a bandwidth
    assert model.describe() == "+5ms per data call"


def test_a_bandwidth_adds_size_over_rate_to_data_calls_only() -> None:
    model = LatencyModel(0.005, 0.0, 50e6)
    assert model.on
    assert model.data_call(1_500_000) == pytest.approx(0.005 + 0.030)
    assert model.data_call(5_200) == pytest.approx(0.005 + 0.000104)
    assert model.data_call() == 0.005
    assert model.metadata_latency == 0.0
    assert model.describe() == "+5ms per data call, 50MB/s, version checks +0ms"


def test_a_bandwidth_alone_turns_the_model_on() -> None:
    assert LatencyModel(bandwidth=1e6).on
    assert LatencyModel(version_latency=0.001).on


@given(
    st.floats(0, 1),
    st.floats(1e3, 1e10),
    st.integers(0, 2**31),
    st.integers(0, 2**31),
)
def test_a_larger_object_never_moves_faster(
    latency: float, bandwidth: float, small: int, extra: int
) -> None:
    model = LatencyModel(latency, bandwidth=bandwidth)
    assert model.latency <= model.data_call(small) <= model.data_call(small + extra)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latency": -0.001}, "storage latency must be a duration >= 0"),
        ({"latency": float("nan")}, "storage latency must be a duration >= 0"),
        ({"version_latency": -1.0}, "storage version latency must be a duration >= 0"),
        ({"bandwidth": 0.0}, "bandwidth must be above 0"),
        ({"bandwidth": float("inf")}, "bandwidth must be above 0"),
    ],
)
def test_the_model_refuses_impossible_values(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LatencyModel(**kwargs)


def test_config_builds_the_model_and_checks_it_at_once() -> None:
    config = Config(storage_latency=0.005, storage_version_latency=0.0, storage_bandwidth=50e6)
    assert config.storage_model == LatencyModel(0.005, 0.0, 50e6)
    assert Config().storage_model == LatencyModel()
    with pytest.raises(ValueError, match="bandwidth must be above 0"):
        Config(storage_bandwidth=-1.0)


# --- `faasd-py up` options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "shown"),
    [
        ("--storage-bandwidth", "fast", "expected a transfer rate such as 50MB/s"),
        ("--storage-bandwidth", "100Mbit/s", "a transfer rate is in bytes"),
        ("--storage-version-latency", "soon", "expected a duration such as 30s"),
        ("--storage-version-latency", "-1", "duration must not be negative"),
    ],
)
def test_up_rejects_a_bad_storage_model_before_starting(
    option: str, value: str, shown: str
) -> None:
    result = run("up", option, value)
    assert result.exit_code == 2
    assert option in result.output and shown in result.output


@pytest.mark.parametrize(
    ("variable", "option"),
    [
        ("FAASD_STORAGE_BANDWIDTH", "--storage-bandwidth"),
        ("FAASD_STORAGE_VERSION_LATENCY", "--storage-version-latency"),
    ],
)
def test_up_reads_the_storage_model_from_the_environment(variable: str, option: str) -> None:
    result = run("up", env={variable: "junk"})
    assert result.exit_code == 2 and option in result.output


def test_up_help_names_the_storage_model_options() -> None:
    text = run("up", "--help").output
    for name in ("--storage-latency", "--storage-version-latency", "--storage-bandwidth"):
        assert name in text
    assert "FAASD_STORAGE_BANDWIDTH" in text and "FAASD_STORAGE_VERSION_LATENCY" in text
