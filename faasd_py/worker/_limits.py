"""What one host admits: bounds a deployment must keep, and the memory its instances reserve.

At deploy (HostLimits.check): com.openfaas.scale.min and .max within --max-scale and
--max-instances; limits.cpu and requests.cpu within the host's cores (its CPUs, or its cgroup's
quota when lower); limits.memory and requests.memory within the host's memory (MemTotal) and,
for the limit, the instances' memory budget. A 400 names the field and the bound.

At run time (MemoryAdmission): every instance reserves its limits.memory (or --instance-memory
without one) from the host's budget (--memory-budget, 80% of MemTotal by default) before it
starts, and gives it back when it has exited; no more than --max-instances run at once. An
instance that does not fit is not started: callers of a function with instances wait in its
queue, callers of a function with none get 429 with Retry-After, and pools that were refused
try again when memory is given back. A plain object, no I/O: the pools drive it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faasd_py.errors import SpecError
from faasd_py.spec import LABEL_SCALE_MAX, LABEL_SCALE_MIN, FunctionSpec

# The share of the host's memory that instances may reserve when --memory-budget is not given.
DEFAULT_BUDGET_SHARE = 0.8


def host_memory(meminfo: Path = Path("/proc/meminfo")) -> int:
    """Bytes of memory of this host: MemTotal."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no MemTotal in {meminfo}")


def host_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> float:
    """CPUs this process may run on, or its cgroup's CPU quota when that is lower."""
    cores = float(len(os.sched_getaffinity(0)))
    quota = _cgroup_quota(cgroup)
    return min(cores, quota) if quota is not None else cores


def _cgroup_quota(root: Path) -> float | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()  # cgroup v2
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # cgroup v1
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def _size(n: int) -> str:
    """Bytes as a Kubernetes quantity, as users write them: 128Mi, 23.5Gi."""
    for suffix, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n >= factor:
            return f"{n / factor:.4g}{suffix}"
    return str(n)


@dataclass(frozen=True)
class HostLimits:
    cores: float
    memory: int  # MemTotal
    budget: int  # what instances may reserve together
    max_scale: int  # instances per function
    max_instances: int  # instances on the host
    instance_memory: int  # reserved by an instance without limits.memory

    @classmethod
    def of_host(
        cls, *, budget: int | None, max_scale: int, max_instances: int, instance_memory: int
    ) -> HostLimits:
        """This host's cores and memory, and the budget (None: DEFAULT_BUDGET_SHARE of it)."""
        memory = host_memory()
        return cls(
            cores=host_cores(),
            memory=memory,
            budget=int(memory * DEFAULT_BUDGET_SHARE) if budget is None else budget,
            max_scale=max_scale,
            max_instances=max_instances,
            instance_memory=instance_memory,
        )

    def reserve(self, spec: FunctionSpec) -> int:
        """The memory an instance of `spec` reserves: its limit, or --instance-memory."""
        return spec.limits.memory_bytes or self.instance_memory

    def check(self, spec: FunctionSpec) -> None:
        """SpecError (400) naming the first field of `spec` beyond what this host admits."""
        most = min(self.max_scale, self.max_instances)
        bound = (
            f"--max-scale {self.max_scale}"
            if self.max_scale <= self.max_instances
            else f"--max-instances {self.max_instances} on this host"
        )
        for label, value in ((LABEL_SCALE_MIN, spec.scale_min), (LABEL_SCALE_MAX, spec.scale_max)):
            if value > most:
                given = "" if spec.labels.get(label) else " (the default)"
                raise SpecError(
                    f"labels.{label}",
                    f"at most {most} instances per function ({bound}), got {value}{given}",
                )
        for kind, resources in (("limits", spec.limits), ("requests", spec.requests)):
            cpu = resources.cpu_cores
            if cpu is not None and cpu > self.cores:
                raise SpecError(
                    f"{kind}.cpu",
                    f"at most this host's {self.cores:g} cores, got {resources.cpu!r}",
                )
            memory = resources.memory_bytes
            if memory is not None and memory > self.memory:
                raise SpecError(
                    f"{kind}.memory",
                    f"at most this host's memory, {_size(self.memory)} (MemTotal), "
                    f"got {resources.memory!r}",
                )
        memory = spec.limits.memory_bytes
        if memory is not None and memory > self.budget:
            raise SpecError(
                "limits.memory",
                f"at most the instances' memory budget of {_size(self.budget)} "
                f"(--memory-budget), got {spec.limits.memory!r}",
            )
        floor = spec.scale_min * self.reserve(spec)
        if floor > self.budget:
            raise SpecError(
                f"labels.{LABEL_SCALE_MIN}",
                f"{spec.scale_min} instances of {_size(self.reserve(spec))} need "
                f"{_size(floor)}, over this host's memory budget of {_size(self.budget)} "
                "(--memory-budget)",
            )


@dataclass(frozen=True, slots=True)
class AdmissionStatistics:
    instances: int  # holding a reservation: starting or running
    reserved: int  # bytes, of instances and zygotes
    budget: int
    max_instances: int
    refused: int  # starts refused so far
    zygotes: int = 0  # holding a reservation


class MemoryAdmission:
    """The memory reserved on this host by instances and zygotes, against its budget, and the
    instances' count against theirs."""

    def __init__(self, budget: int, max_instances: int) -> None:
        self.budget = budget
        self.max_instances = max_instances
        self._reserved = 0
        self._instances = 0
        self._zygotes = 0
        self._refused = 0
        self._waiting: dict[object, Callable[[], None]] = {}

    def try_reserve(self, size: int, waiter: object, retry: Callable[[], None]) -> bool:
        """Reserve `size` bytes for one instance; when they do not fit, False, and `retry` is
        called once memory is given back (until `forget(waiter)`)."""
        if self._instances < self.max_instances and self._reserved + size <= self.budget:
            self._reserved += size
            self._instances += 1
            return True
        self._refused += 1
        self._waiting[waiter] = retry
        return False

    def release(self, size: int) -> None:
        self._instances -= 1
        self._give_back(size)

    def try_reserve_zygote(self, size: int) -> bool:
        """Reserve `size` bytes for a zygote if they fit now (a zygote never waits: its
        function's instances start without one instead)."""
        if self._reserved + size > self.budget:
            return False
        self._reserved += size
        self._zygotes += 1
        return True

    def release_zygote(self, size: int) -> None:
        self._zygotes -= 1
        self._give_back(size)

    def _give_back(self, size: int) -> None:
        self._reserved -= size
        waiting, self._waiting = self._waiting, {}
        for retry in waiting.values():
            retry()  # may reserve again, or wait again

    def forget(self, waiter: object) -> None:
        self._waiting.pop(waiter, None)

    def describe(self) -> str:
        """Why a start does not fit, as callers are told."""
        n = self._zygotes
        zygotes = f" ({n} zygote{'s' if n > 1 else ''} among them)" if n else ""
        return (
            f"{_size(self._reserved)} of its {_size(self.budget)} memory budget{zygotes} and "
            f"{self._instances} of its {self.max_instances} instances are taken"
        )

    def statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(
            self._instances,
            self._reserved,
            self.budget,
            self.max_instances,
            self._refused,
            self._zygotes,
        )
