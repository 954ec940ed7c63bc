"""The narrow interface through which the gateway drives workers: `LocalWorker` wraps the
in-process `Worker` of `faasd-py up`; faasd_py.cluster's backend drives remote workers.

Control calls are coroutines because a remote worker answers over the network; the figures
(`statistics` and the like) are read synchronously from what the backend holds, which a remote
backend brings up to date in `refresh` (the gateway awaits it before it reads them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from faasd_py.protocol import Request
from faasd_py.spec import DEFAULT_NAMESPACE, FunctionSpec
from faasd_py.worker import (
    LifecycleStatistics,
    LogEntry,
    Outcome,
    PoolStatistics,
    Worker,
)


class FunctionLogs(Protocol):
    """One function's recent output, and what it prints from now on."""

    async def recent(
        self, tail: int | None = None, since: float | None = None, instance: str | None = None
    ) -> list[LogEntry]: ...

    def follow(self) -> AsyncIterator[LogEntry]:
        """New entries from this call on (registered before it returns: nothing printed
        between `recent` and the first entry is lost)."""
        ...


class FunctionWorker(Protocol):
    @property
    def isolation(self) -> str:
        """How instances run: "sandbox" or "process" (in a cluster: "cluster")."""
        ...

    async def check_deployable(self, spec: FunctionSpec) -> None:
        """Raise BadRequest when the spec's image cannot run (not built, or not pushed)."""
        ...

    async def apply(self, spec: FunctionSpec, secrets: Mapping[str, bytes]) -> None: ...

    async def remove(self, name: str) -> None: ...

    async def scale(self, name: str, replicas: int) -> None: ...

    async def update_secret(
        self, name: str, value: bytes, *, namespace: str = DEFAULT_NAMESPACE
    ) -> None:
        """The secret's new value, for the running instances of the functions that use it."""
        ...

    async def invoke(self, name: str, request: Request) -> Outcome: ...

    async def refresh(self) -> None:
        """Make `statistics` and the like current (a no-op in process)."""
        ...

    def statistics(self, name: str) -> PoolStatistics | None: ...

    def all_statistics(self) -> dict[str, PoolStatistics]: ...

    def policy_statistics(self, name: str) -> LifecycleStatistics | None:
        """The keep-alive lifecycle of the function's app (None: no policy)."""
        ...

    def logs(self, name: str) -> FunctionLogs:
        """NotFound when the function does not run here."""
        ...


class LocalWorker:
    """The in-process worker of `faasd-py up`, as the gateway drives it."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def invoke(self, name: str, request: Request) -> Outcome:
        return await self.worker.invoke(name, request)

    def statistics(self, name: str) -> PoolStatistics | None:
        return self.worker.statistics(name)

    def all_statistics(self) -> dict[str, PoolStatistics]:
        return self.worker.all_statistics()

    def policy_statistics(self, name: str) -> LifecycleStatistics | None:
        return self.worker.policy_statistics(name)

    @property
    def isolation(self) -> str:
        return self.worker.isolation

    async def check_deployable(self, spec: FunctionSpec) -> None:
        self.worker.check_deployable(spec)

    async def apply(self, spec: FunctionSpec, secrets: Mapping[str, bytes]) -> None:
        self.worker.apply(spec, secrets)

    async def remove(self, name: str) -> None:
        self.worker.remove(name)

    async def scale(self, name: str, replicas: int) -> None:
        self.worker.scale(name, replicas)

    async def update_secret(
        self, name: str, value: bytes, *, namespace: str = DEFAULT_NAMESPACE
    ) -> None:
        self.worker.update_secret(name, value, namespace=namespace)

    async def refresh(self) -> None:
        pass

    def logs(self, name: str) -> FunctionLogs:
        return _LocalLogs(self.worker, name)


class _LocalLogs:
    def __init__(self, worker: Worker, name: str) -> None:
        self._buffer = worker.logs(name)  # NotFound now, not at the first read

    async def recent(
        self, tail: int | None = None, since: float | None = None, instance: str | None = None
    ) -> list[LogEntry]:
        return self._buffer.recent(tail, since, instance)

    def follow(self) -> AsyncIterator[LogEntry]:
        return self._buffer.follow()
