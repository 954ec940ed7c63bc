"""Azure Functions 2019 traces: reading the files strictly, the synthetic trace, replay."""

from __future__ import annotations

import itertools
import math
import pickle
import random
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faasd_py import traces
from faasd_py.errors import BadRequest
from faasd_py.loadgen import Arrival
from faasd_py.spec import validate_name
from faasd_py.traces import (
    DurationPercentiles,
    MemoryPercentiles,
    TraceError,
    TraceFunction,
    attach_durations,
    load_durations,
    load_invocations,
    load_memory,
    synthetic_memory,
    synthetic_trace,
    total_invocations,
    trace_arrivals,
    with_unique_names,
)

DATA = Path(__file__).parent.parent / "data"
INVOCATIONS = DATA / "invocations_per_function_md.anon.d01.csv"
DURATIONS = DATA / "function_durations_percentiles.anon.d01.csv"
MEMORY = DATA / "app_memory_percentiles.anon.d01.csv"

# The fixture's hashes (made up): F4 shares F1's first 12 characters.
O1, O2, O3 = "0a11ce" + "0" * 58, "0b0b00" + "1" * 58, "0c0c00" + "2" * 58
A1, A2, A3, A4 = (
    "a1a1a1a1" + "3" * 56,
    "a2a2a2a2" + "4" * 56,
    "a3a3a3a3" + "5" * 56,
    "a4a4a4a4" + "6" * 56,
)
F1, F4 = "f1f1f1f1f1f1" + "7" * 52, "f1f1f1f1f1f1" + "8" * 52
F2, F3 = "f2f2f2f2f2f2" + "9" * 52, "f3f3f3f3f3f3" + "a" * 52

SHORT_HEADER = "HashOwner,HashApp,HashFunction,Trigger,1,2,3\n"
DURATION_HEADER = (
    "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,"
    "percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,"
    "percentile_Average_99,percentile_Average_100\n"
)
MEMORY_HEADER = (
    "HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,"
    "AverageAllocatedMb_pct5,AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,"
    "AverageAllocatedMb_pct75,AverageAllocatedMb_pct95,AverageAllocatedMb_pct99,"
    "AverageAllocatedMb_pct100\n"
)


def write(tmp_path: Path, text: str, name: str = "invocations.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def function(
    counts: list[int], name: str = "f", durations: DurationPercentiles | None = None
) -> TraceFunction:
    return TraceFunction("owner", "app", name, "http", tuple(counts), durations)


PERCENTILES = DurationPercentiles(
    average=120.5, minimum=10.0, maximum=900.0, p0=12.0, p1=15.0, p25=60.0, p50=100.0,
    p75=150.0, p99=700.0, p100=800.0,
)  # fmt: skip


# --- reading the published files -----------------------------------------------------------------
#
# The invocations file has two readers: numpy's where it is installed, the csv module's otherwise
# (and for any file numpy does not read plainly). Reading tests run against both.


@pytest.fixture(params=["numpy", "csv"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which reader load_invocations uses by default: "csv" as if numpy were not installed."""
    if request.param == "csv":
        monkeypatch.setattr(traces, "numpy_module", lambda: None)
    return str(request.param)


each_reader = pytest.mark.usefixtures("reader")


def test_the_numpy_reader_gives_what_the_csv_reader_gives() -> None:
    by_numpy = load_invocations(INVOCATIONS, reader="numpy")
    by_csv = load_invocations(INVOCATIONS, reader="csv")
    assert by_numpy == by_csv
    rows = load_invocations(INVOCATIONS, reader="numpy", arrays=True)
    assert [tuple(f.counts) for f in rows] == [f.counts for f in by_csv]
    assert not rows[0].counts.flags.writeable  # type: ignore[attr-defined]


@each_reader
def test_the_invocations_file_gives_each_function_with_its_counts_per_minute() -> None:
    functions = load_invocations(INVOCATIONS)
    assert [f.trigger for f in functions] == [
        "http", "timer", "queue", "event", "orchestration", "storage",
    ]  # fmt: skip
    first = functions[0]
    assert (first.owner, first.app, first.function) == (O1, A1, F1)
    assert len(first.counts) == 1440
    assert (first.counts[0], first.counts[59], first.counts[1439]) == (3, 1, 2)
    assert first.total == 6
    assert [f.total for f in functions] == [6, 288, 100, 5, 0, 1000]
    assert all(f.durations is None for f in functions)


@each_reader
def test_function_names_are_dns_labels_unique_within_the_trace() -> None:
    functions = load_invocations(INVOCATIONS)
    names = [f.name for f in functions]
    assert len(set(names)) == len(names)
    for name in names:
        assert validate_name(name) == name
    # F1 and F4 share their first 12 characters: the app hash tells them apart.
    assert names[0] == "tf-f1f1f1f1f1f1-a1a1a1a1"
    assert names[3] == "tf-f1f1f1f1f1f1-a3a3a3a3"
    assert names[1] == "tf-f2f2f2f2f2f2"
    assert names[5] == "tf-f6f6f6f6f6f6"  # lower-cased
    assert functions[0].app_name == "ta-a1a1a1a13333"


def test_a_function_listed_twice_in_one_app_still_gets_its_own_name() -> None:
    twice = [TraceFunction("o", "app", "abc", "http", (1,)) for _ in range(3)]
    assert [f.name for f in with_unique_names(twice)] == [
        "tf-abc-app", "tf-abc-app-2", "tf-abc-app-3",
    ]  # fmt: skip


@each_reader
def test_limit_functions_reads_only_the_first_ones(tmp_path: Path) -> None:
    assert [f.function for f in load_invocations(INVOCATIONS, limit_functions=2)] == [F1, F2]
    assert len(load_invocations(INVOCATIONS, limit_functions=100)) == 6
    # Rows past the limit are not read at all, so a broken tail does not matter.
    path = write(tmp_path, SHORT_HEADER + "o,a,f,http,1,2,3\no,a,g,http,x\n")
    assert len(load_invocations(path, limit_functions=1)) == 1
    with pytest.raises(ValueError, match="limit_functions must be at least 1"):
        load_invocations(INVOCATIONS, limit_functions=0)


def test_durations_join_the_functions_they_describe() -> None:
    durations = load_durations(DURATIONS)
    assert len(durations) == 5
    assert durations[(O1, A1, F1)] == PERCENTILES
    functions = attach_durations(load_invocations(INVOCATIONS), durations)
    assert [f.durations is not None for f in functions] == [True, True, True, True, False, False]
    assert functions[2].durations is not None and functions[2].durations.average == 5.25
    # Joining keeps the names.
    assert [f.name for f in functions] == [f.name for f in load_invocations(INVOCATIONS)]


def test_memory_percentiles_by_app() -> None:
    memory = load_memory(MEMORY)
    assert set(memory) == {(O1, A1), (O2, A2), (O2, A3)}
    assert memory[(O1, A1)] == MemoryPercentiles(150.5, 120, 125, 140, 150, 160, 175, 190, 200)


@each_reader
def test_a_file_with_windows_line_endings_and_a_bom_reads_the_same(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeff" + (SHORT_HEADER + "o,a,f,http,1,2,3\n").replace("\n", "\r\n"))
    assert load_invocations(path)[0].counts == (1, 2, 3)


@each_reader
def test_a_last_line_without_its_newline_is_fine_when_complete(tmp_path: Path) -> None:
    path = write(tmp_path, SHORT_HEADER + "o,a,f,http,1,2,3")
    assert load_invocations(path)[0].counts == (1, 2, 3)


# --- malformed files: the message names the file, the line and the problem ------------------------


@each_reader
@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (
            SHORT_HEADER + "o,a,f,http,1,2,3\no,a,g,http,1,2\n",
            3,
            "expected 7 columns, got 6",
        ),
        (SHORT_HEADER + "o,a,f,http,1,x,3\n", 2, "column '2' is not a whole number: 'x'"),
        (SHORT_HEADER + "o,a,f,http,1,2,2.5\n", 2, "column '3' is not a whole number: '2.5'"),
        (SHORT_HEADER + "o,a,f,http,1,,3\n", 2, "column '2' is not a whole number: ''"),
        (SHORT_HEADER + "o,a,f,http,1,-1,3\n", 2, "column '2' is a negative count: '-1'"),
        (SHORT_HEADER + "o,,f,http,1,2,3\n", 2, "HashApp is empty"),
        ("o,a,f,http,1,2,3\n", 1, "missing header: expected HashOwner,HashApp,HashFunction,"),
        ("HashOwner,HashApp,HashFunction,Trigger\n", 1, "missing header"),
        ("HashOwner,HashApp,HashFunction,Trigger,1,3\n", 1, "missing header"),
        (
            SHORT_HEADER + "o,a,f,http,1,2,3\n\no,a,g,http,1,2",
            4,
            "expected 7 columns, got 6 (the file ends in the middle of this line: was it cut",
        ),
        (
            SHORT_HEADER + "o,a,f,http,1,2,",
            2,
            "column '3' is not a whole number: '' (the file ends in the middle of this line",
        ),
        (SHORT_HEADER + 'o,a,"f,http,1,2,3\n', 2, "malformed CSV"),
    ],
)
def test_a_malformed_invocations_file_is_refused_naming_the_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TraceError) as info:
        load_invocations(path)
    assert info.value.message.startswith(f"{path} line {line}: {problem}")
    assert (info.value.path, info.value.line) == (path, line)


@each_reader
def test_a_cut_short_real_width_file_names_its_last_line(tmp_path: Path) -> None:
    text = INVOCATIONS.read_text()
    path = write(tmp_path, text[: len(text) * 9 // 10])
    with pytest.raises(TraceError, match=r"line 7: expected 1444 columns, got \d+ \(the file ends"):
        load_invocations(path)


@each_reader
def test_an_empty_file_is_refused_saying_what_was_expected(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(TraceError) as info:
        load_invocations(path)
    assert info.value.message == (
        f"{path}: the file is empty; expected a header "
        "HashOwner,HashApp,HashFunction,Trigger,1,2,...,1440"
    )


@each_reader
def test_a_missing_file_and_a_binary_file_are_trace_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"nowhere\.csv: cannot read the file: No such file"):
        load_invocations(tmp_path / "nowhere.csv")
    path = tmp_path / "binary.csv"
    path.write_bytes(SHORT_HEADER.encode() + b"o,a,\xff\xfe,http,1,2,3\n")
    with pytest.raises(TraceError, match=r"binary\.csv line 2: not UTF-8 text"):
        load_invocations(path)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("o,a,f,120,6,10,900,12,15,60,100,150,700", "expected 14 columns, got 13"),
        ("o,a,f,120,6,10,900,12,15,60,slow,150,700,800", "column 'percentile_Average_50' is not"),
        ("o,a,f,120,6,-10,900,12,15,60,100,150,700,800", "column 'Minimum' must be a finite"),
        ("o,a,f,nan,6,10,900,12,15,60,100,150,700,800", "column 'Average' must be a finite"),
    ],
)
def test_a_malformed_durations_file_is_refused_naming_the_line(
    tmp_path: Path, row: str, problem: str
) -> None:
    path = write(tmp_path, DURATION_HEADER + "o,a,g,1,1,1,1,1,1,1,1,1,1,1\n" + row + "\n")
    with pytest.raises(TraceError, match=f"line 3: {problem}"):
        load_durations(path)


def test_the_durations_and_memory_files_need_their_headers(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="line 1: missing header: expected HashOwner,HashApp,Hash"):
        load_durations(INVOCATIONS)
    with pytest.raises(TraceError, match="line 1: missing header: expected HashOwner,HashApp,Samp"):
        load_memory(DURATIONS)
    with pytest.raises(TraceError, match="the file is empty"):
        load_memory(write(tmp_path, "", "memory.csv"))
    path = write(tmp_path, MEMORY_HEADER + "o,a,1,2,3,4,5,6,7,8,9,x\n", "memory.csv")
    with pytest.raises(TraceError, match="line 2: column 'AverageAllocatedMb_pct100' is not"):
        load_memory(path)


def test_a_trace_error_is_a_bad_request_and_crosses_process_boundaries() -> None:
    error = TraceError(Path("t.csv"), 17, "expected 1444 columns, got 12")
    assert isinstance(error, BadRequest) and error.status == 400
    assert str(error) == "t.csv line 17: expected 1444 columns, got 12"
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.line, again.path) == (str(error), 17, Path("t.csv"))


# --- sampling durations --------------------------------------------------------------------------


def test_sampled_durations_stay_within_minimum_and_maximum_with_the_median_at_p50() -> None:
    rng = random.Random(1)
    draws = [PERCENTILES.sample(rng) for _ in range(20_000)]
    assert PERCENTILES.minimum <= min(draws) and max(draws) <= PERCENTILES.maximum
    assert statistics.median(draws) == pytest.approx(PERCENTILES.p50, rel=0.03)
    quartiles = statistics.quantiles(draws, n=4)
    assert quartiles[0] == pytest.approx(PERCENTILES.p25, rel=0.05)
    assert quartiles[2] == pytest.approx(PERCENTILES.p75, rel=0.05)
    assert sum(d > PERCENTILES.p99 for d in draws) / len(draws) == pytest.approx(0.01, abs=0.003)


class FixedDraw(random.Random):
    """A random source that always draws the same number."""

    def __init__(self, u: float) -> None:
        super().__init__(0)
        self.u = u

    def random(self) -> float:
        return self.u


@given(
    st.lists(st.floats(0, 1e6), min_size=7, max_size=7),
    st.tuples(st.floats(0, 1e6), st.floats(0, 1e6)).map(sorted),
    st.lists(st.floats(0, 1, exclude_max=True), min_size=2, max_size=10),
)
def test_sampling_is_an_inverse_cdf_within_minimum_and_maximum_for_any_percentiles(
    points: list[float], bounds: list[float], draws: list[float]
) -> None:
    # Even percentiles out of order or outside [minimum, maximum], as published data can have.
    minimum, maximum = bounds
    percentiles = DurationPercentiles(sum(points) / 7, minimum, maximum, *points)
    samples = [percentiles.sample(FixedDraw(u)) for u in sorted(draws)]
    assert all(minimum <= x <= maximum for x in samples)
    assert samples == sorted(samples)  # a higher draw never gives a shorter duration


def test_sampling_follows_the_percentile_points() -> None:
    assert PERCENTILES.sample(FixedDraw(0.0)) == PERCENTILES.p0
    assert PERCENTILES.sample(FixedDraw(0.5)) == PERCENTILES.p50
    assert PERCENTILES.sample(FixedDraw(0.625)) == pytest.approx(125.0)  # halfway p50..p75
    skewed = DurationPercentiles(50, 40, 60, 10, 20, 30, 50, 70, 80, 90)
    assert skewed.sample(FixedDraw(0.0)) == 40  # p0 below the minimum: the minimum
    assert skewed.sample(FixedDraw(0.999)) == 60  # p99 above the maximum: the maximum


def test_percentiles_must_be_finite_and_not_negative() -> None:
    with pytest.raises(ValueError, match="minimum must be a finite number >= 0, got -1"):
        DurationPercentiles(1, -1, 1, 1, 1, 1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="p99 must be a finite number"):
        MemoryPercentiles(1, 1, 1, 1, 1, 1, 1, math.inf, 1)


# --- replay --------------------------------------------------------------------------------------


def per_minute(arrivals: list[Arrival], seconds_per_minute: float) -> Counter[tuple[str, int]]:
    return Counter((a.function, int(a.at // seconds_per_minute)) for a in arrivals)


@pytest.mark.parametrize("spread", ["uniform", "poisson"])
def test_replay_sends_each_minute_its_count_within_that_minute(spread: str) -> None:
    functions = attach_durations(load_invocations(INVOCATIONS), load_durations(DURATIONS))
    arrivals = list(trace_arrivals(functions, speedup=60.0, seed=1, spread=spread))  # type: ignore[arg-type]
    assert len(arrivals) == total_invocations(functions) == 1399
    assert [a.at for a in arrivals] == sorted(a.at for a in arrivals)
    # At speedup 60 a minute lasts a second.
    expected = Counter({(f.name, m): c for f in functions for m, c in enumerate(f.counts) if c})
    assert per_minute(arrivals, 1.0) == expected
    assert all(0 <= a.at < 1440 for a in arrivals)


def test_each_arrival_carries_a_duration_from_its_function() -> None:
    functions = attach_durations(load_invocations(INVOCATIONS), load_durations(DURATIONS))
    by_name = {f.name: f.durations for f in functions}
    for arrival in trace_arrivals(functions, speedup=60.0, seed=1):
        durations = by_name[arrival.function]
        if durations is None:
            assert arrival.duration_ms is None
        else:
            assert arrival.duration_ms is not None
            assert durations.minimum <= arrival.duration_ms <= durations.maximum


def test_uniform_spread_spaces_a_minutes_arrivals_evenly() -> None:
    arrivals = list(trace_arrivals([function([4, 0, 2])], speedup=1.0, seed=0, spread="uniform"))
    assert [a.at for a in arrivals] == [7.5, 22.5, 37.5, 52.5, 135.0, 165.0]


def test_poisson_spread_is_random_but_even_on_average() -> None:
    arrivals = list(trace_arrivals([function([10_000])], speedup=1.0, seed=3, spread="poisson"))
    times = [a.at for a in arrivals]
    assert len(times) == 10_000 and min(times) >= 0 and max(times) < 60
    # Uniform over the minute: each quarter gets a quarter.
    quarters = Counter(int(t // 15) for t in times)
    assert all(q / 10_000 == pytest.approx(0.25, abs=0.02) for q in quarters.values())
    assert times != [a.at for a in trace_arrivals([function([10_000])], 1.0, 3, "uniform")]


@given(
    st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=8), min_size=1, max_size=5),
    st.floats(0.5, 1000),
    st.sampled_from(["uniform", "poisson"]),
)
def test_replay_keeps_counts_minutes_and_order_for_any_trace(
    counts: list[list[int]], speedup: float, spread: str
) -> None:
    functions = with_unique_names(function(c, name=f"fn{i}") for i, c in enumerate(counts))
    arrivals = list(trace_arrivals(functions, speedup, seed=9, spread=spread))  # type: ignore[arg-type]
    length = 60 / speedup
    assert [a.at for a in arrivals] == sorted(a.at for a in arrivals)
    assert len(arrivals) == total_invocations(functions)
    got = Counter((a.function, math.floor(a.at / length)) for a in arrivals)
    assert got == Counter({(f.name, m): c for f in functions for m, c in enumerate(f.counts) if c})


def test_the_last_arrival_of_a_minute_does_not_round_into_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A draw just below 1 at minute 1439: 1439 + 0.99999999999999989 rounds to 1440.0.
    monkeypatch.setattr(random, "Random", lambda *_: FixedDraw(1 - 2**-53))
    arrivals = list(trace_arrivals([function([0] * 1439 + [1])], speedup=1.0, seed=0))
    assert len(arrivals) == 1
    assert 1439 * 60 < arrivals[0].at < 1440 * 60


def test_speedup_compresses_time() -> None:
    functions = load_invocations(INVOCATIONS)
    slow = list(trace_arrivals(functions, speedup=1.0, seed=2, spread="uniform"))
    fast = list(trace_arrivals(functions, speedup=60.0, seed=2, spread="uniform"))
    assert [a.at / 60 for a in slow] == pytest.approx([a.at for a in fast])
    assert slow[-1].at > 86_000 and fast[-1].at < 1440


def test_a_window_of_minutes_starts_at_time_zero() -> None:
    functions = load_invocations(INVOCATIONS)
    arrivals = list(trace_arrivals(functions, 60.0, seed=1, start_minute=5, minutes=10))
    # Minutes 6..15 of the day: the queue function's 10 per minute for minutes 6..10, and the
    # timer every 5 minutes (minutes 6 and 11, numbering from 1).
    assert len(arrivals) == total_invocations(functions, start_minute=5, minutes=10) == 52
    assert all(0 <= a.at < 10 for a in arrivals)
    assert list(trace_arrivals(functions, 60.0, seed=1, start_minute=2000)) == []


def test_replay_is_the_same_per_seed_and_a_function_keeps_its_arrivals_alone() -> None:
    functions = attach_durations(load_invocations(INVOCATIONS), load_durations(DURATIONS))
    first = list(trace_arrivals(functions, 60.0, seed=4))
    assert first == list(trace_arrivals(functions, 60.0, seed=4))
    assert first != list(trace_arrivals(functions, 60.0, seed=5))
    alone = list(trace_arrivals(functions[2:3], 60.0, seed=4))
    assert alone == [a for a in first if a.function == functions[2].name]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"speedup": 0.0}, "speedup must be a finite number above 0"),
        ({"speedup": math.inf}, "speedup must be a finite number above 0"),
        ({"spread": "normal"}, "spread must be 'uniform' or 'poisson'"),
        ({"start_minute": -1}, "start_minute must not be negative"),
        ({"minutes": -1}, "minutes must not be negative"),
    ],
)
def test_replay_refuses_nonsense(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"speedup": 1.0, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        trace_arrivals([function([1])], **arguments)  # type: ignore[arg-type]


# --- the synthetic trace -------------------------------------------------------------------------

APPS, MINUTES = 2000, 1440


@pytest.fixture(scope="module")
def synthetic() -> list[TraceFunction]:
    return synthetic_trace(APPS, MINUTES, seed=1)


def app_rates_per_minute(functions: list[TraceFunction]) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for f in functions:
        totals[(f.owner, f.app)] += f.total
    return {app: total / MINUTES for app, total in totals.items()}


def test_synthetic_apps_are_mostly_rare_as_in_azure(synthetic: list[TraceFunction]) -> None:
    rates = list(app_rates_per_minute(synthetic).values())
    assert len(rates) == APPS
    at_most_hourly = sum(r <= 1 / 60 for r in rates) / APPS
    at_most_per_minute = sum(r <= 1 for r in rates) / APPS
    assert at_most_hourly == pytest.approx(0.45, abs=0.07)
    assert at_most_per_minute == pytest.approx(0.81, abs=0.07)


def test_synthetic_rates_span_many_orders_of_magnitude(synthetic: list[TraceFunction]) -> None:
    rates = [r for r in app_rates_per_minute(synthetic).values() if r > 0]
    assert math.log10(max(rates) / min(rates)) >= 7


def test_synthetic_triggers_follow_the_azure_mix(synthetic: list[TraceFunction]) -> None:
    shares = Counter(f.trigger for f in synthetic)
    expected = {
        "http": 0.55, "queue": 0.15, "timer": 0.16, "orchestration": 0.07,
        "storage": 0.03, "event": 0.02, "others": 0.02,
    }  # fmt: skip
    assert set(shares) == set(expected)
    for trigger, share in expected.items():
        assert shares[trigger] / len(synthetic) == pytest.approx(share, abs=0.025), trigger


def test_most_synthetic_apps_have_one_function_and_a_few_many(
    synthetic: list[TraceFunction],
) -> None:
    sizes = Counter((f.owner, f.app) for f in synthetic).values()
    assert sum(n == 1 for n in sizes) / APPS == pytest.approx(0.54, abs=0.05)
    assert sum(n <= 10 for n in sizes) / APPS == pytest.approx(0.95, abs=0.03)
    assert max(sizes) >= 30


def test_synthetic_durations_are_half_under_a_second(synthetic: list[TraceFunction]) -> None:
    averages = [f.durations.average for f in synthetic if f.durations is not None]
    assert len(averages) == len(synthetic)
    assert 700 <= statistics.median(averages) <= 1000
    assert sum(a < 1000 for a in averages) / len(averages) == pytest.approx(0.5, abs=0.07)
    for f in synthetic:
        d = f.durations
        assert d is not None
        points = [d.minimum, d.p0, d.p1, d.p25, d.p50, d.p75, d.p99, d.p100, d.maximum]
        assert points == sorted(points), f.name


def test_synthetic_timers_fire_on_usual_schedules(synthetic: list[TraceFunction]) -> None:
    # As people configure timer triggers: every few seconds, every few minutes, hourly, daily.
    usual_minutes = {1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360, 720, 1440}
    usual_per_minute = {60, 12, 6, 4, 2}  # every 1, 5, 10, 15, 30 seconds
    checked = 0
    for f in synthetic:
        if f.trigger != "timer" or f.total < 3:
            continue
        if max(f.counts) == 1:
            minutes = [m for m, c in enumerate(f.counts) if c]
            gaps = {b - a for a, b in itertools.pairwise(minutes)}
            assert len(gaps) == 1 and gaps <= usual_minutes, (f.name, gaps)
        else:
            # Several a minute: the same number every minute, give or take the one in between.
            assert max(f.counts) - min(f.counts) <= 1, f.name
            assert round(statistics.fmean(f.counts)) in usual_per_minute, f.name
        checked += 1
    assert checked >= 100


def test_synthetic_busy_functions_are_a_mix_of_steady_and_bursty(
    synthetic: list[TraceFunction],
) -> None:
    busy = [f for f in synthetic if f.trigger != "timer" and f.total >= 10 * MINUTES]
    idle = [sum(c == 0 for c in f.counts) / MINUTES for f in busy]
    steady = sum(share < 0.05 for share in idle) / len(busy)
    bursty = sum(share > 0.5 for share in idle) / len(busy)
    assert len(busy) >= 100
    assert steady >= 0.3 and bursty >= 0.2


def test_synthetic_rare_functions_come_in_small_clusters(synthetic: list[TraceFunction]) -> None:
    rates = app_rates_per_minute(synthetic)
    near = total = 0
    for f in synthetic:
        if f.trigger == "timer" or rates[(f.owner, f.app)] > 1 / 60:
            continue
        minutes = [m for m, c in enumerate(f.counts) for _ in range(c)]
        for i, m in enumerate(minutes):
            total += 1
            near += any(abs(m - o) <= 10 for j, o in enumerate(minutes) if j != i)
    # Spread evenly at these rates, under a third would have a neighbour within 10 minutes.
    assert total >= 500
    assert near / total >= 0.45


def test_synthetic_names_are_unique_dns_labels(synthetic: list[TraceFunction]) -> None:
    names = [f.name for f in synthetic]
    assert len(set(names)) == len(names)
    for name in names[:50]:
        assert validate_name(name) == name


def test_synthetic_memory_keeps_nine_apps_in_ten_under_400_mb(
    synthetic: list[TraceFunction],
) -> None:
    memory = synthetic_memory(synthetic, seed=1)
    assert len(memory) == APPS
    under = sum(m.p100 <= 400 for m in memory.values()) / APPS
    assert under == pytest.approx(0.9, abs=0.05)
    for m in memory.values():
        assert [m.p1, m.p5, m.p25, m.p50, m.p75, m.p95, m.p99, m.p100] == sorted(
            [m.p1, m.p5, m.p25, m.p50, m.p75, m.p95, m.p99, m.p100]
        )


def test_the_synthetic_trace_is_the_same_per_seed() -> None:
    first = synthetic_trace(50, 120, seed=7)
    assert first == synthetic_trace(50, 120, seed=7)
    assert first != synthetic_trace(50, 120, seed=8)
    assert {len(f.counts) for f in first} == {120}
    assert synthetic_memory(first, 7) == synthetic_memory(first, 7)


@pytest.mark.parametrize(("apps", "minutes"), [(0, 10), (10, 0)])
def test_the_synthetic_trace_needs_apps_and_minutes(apps: int, minutes: int) -> None:
    with pytest.raises(ValueError, match="must be at least 1"):
        synthetic_trace(apps, minutes, seed=1)


def test_a_synthetic_trace_replays(synthetic: list[TraceFunction]) -> None:
    functions = synthetic[:200]
    arrivals = trace_arrivals(functions, speedup=600.0, seed=1, minutes=10)
    head = list(itertools.islice(arrivals, 1000))
    assert [a.at for a in head] == sorted(a.at for a in head)
    assert all(a.duration_ms is not None and a.duration_ms > 0 for a in head)
    assert all(a.at < 1.0 for a in head)  # ten minutes at 600 times: a second
