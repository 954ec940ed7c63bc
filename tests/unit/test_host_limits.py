"""What one host admits: deploy-time bounds and the memory admission of instances."""

from __future__ import annotations

from pathlib import Path

import pytest

from faasd_py.errors import SpecError
from faasd_py.spec import FunctionSpec, Resources
from faasd_py.worker._limits import HostLimits, MemoryAdmission, host_cores, host_memory

MIB = 1024 * 1024
HOST = HostLimits(
    cores=2.0,
    memory=4096 * MIB,
    budget=1024 * MIB,
    max_scale=20,
    max_instances=8,
    instance_memory=128 * MIB,
)


def _spec(**fields: object) -> FunctionSpec:
    return FunctionSpec(service="fn", image="fn:latest", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        (
            _spec(labels={"com.openfaas.scale.max": "9"}),
            "labels.com.openfaas.scale.max",
            "at most 8 instances per function (--max-instances 8 on this host), got 9",
        ),
        (
            _spec(limits=Resources(cpu="2500m")),
            "limits.cpu",
            "at most this host's 2 cores, got '2500m'",
        ),
        (
            _spec(requests=Resources(memory="5Gi")),
            "requests.memory",
            "at most this host's memory, 4Gi (MemTotal), got '5Gi'",
        ),
        (
            _spec(limits=Resources(memory="2Gi")),
            "limits.memory",
            "at most the instances' memory budget of 1Gi (--memory-budget), got '2Gi'",
        ),
        (
            _spec(
                labels={"com.openfaas.scale.min": "5", "com.openfaas.scale.max": "5"},
                limits=Resources(memory="256Mi"),
            ),
            "labels.com.openfaas.scale.min",
            "5 instances of 256Mi need 1.25Gi, over this host's memory budget of 1Gi",
        ),
    ],
)
def test_what_the_host_cannot_give_is_refused_naming_the_field_and_bound(
    spec: FunctionSpec, field: str, says: str
) -> None:
    with pytest.raises(SpecError) as info:
        HOST.check(spec)
    assert info.value.field == field
    assert says in info.value.message


def test_what_fits_is_accepted_and_reserves_its_limit_or_the_default() -> None:
    fits = _spec(labels={"com.openfaas.scale.max": "8"}, limits=Resources("512Mi", "2"))
    HOST.check(fits)
    assert HOST.reserve(fits) == 512 * MIB
    assert HOST.reserve(_spec()) == 128 * MIB


def test_admission_refuses_past_the_budget_or_count_and_retries_on_release() -> None:
    admission = MemoryAdmission(budget=300 * MIB, max_instances=3)
    retried: list[str] = []
    assert admission.try_reserve(128 * MIB, "a", lambda: retried.append("a"))
    assert admission.try_reserve(128 * MIB, "a", lambda: retried.append("a"))
    assert not admission.try_reserve(128 * MIB, "b", lambda: retried.append("b"))
    assert admission.try_reserve(10 * MIB, "c", lambda: retried.append("c"))
    assert not admission.try_reserve(1, "c", lambda: retried.append("c"))  # 3 instances
    admission.release(128 * MIB)
    assert sorted(retried) == ["b", "c"]
    admission.forget("b")
    admission.release(10 * MIB)
    assert sorted(retried) == ["b", "c"]  # each waiter once, a forgotten one not at all
    stats = admission.statistics()
    assert (stats.instances, stats.reserved, stats.refused) == (1, 128 * MIB, 2)


def test_host_facts_come_from_meminfo_and_the_cgroup_quota(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemFree: 1 kB\nMemTotal:  2048 kB\n")
    assert host_memory(tmp_path / "meminfo") == 2048 * 1024
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert host_cores(tmp_path) == 0.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert host_cores(tmp_path) >= 1
