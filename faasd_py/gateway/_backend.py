"""The narrow interface through which the gateway drives workers (an in-process `Worker` for
`faasd-py up`; remote workers later)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from faasd_py.protocol import Request
from faasd_py.spec import FunctionSpec
from faasd_py.worker import LifecycleStatistics, LogBuffer, Outcome, PoolStatistics


class FunctionWorker(Protocol):
    @property
    def isolation(self) -> str:
        """How instances run: "sandbox" or "process"."""
        ...

    def check_deployable(self, spec: FunctionSpec) -> object:
        """Raise BadRequest when the spec's image cannot run here (not built)."""
        ...

    def apply(self, spec: FunctionSpec, secrets: Mapping[str, bytes]) -> None: ...

    def remove(self, name: str) -> None: ...

    def scale(self, name: str, replicas: int) -> None: ...

    def update_secret(self, name: str, value: bytes, *, namespace: str = ...) -> None:
        """The secret's new value, for the running instances of the functions that use it."""
        ...

    async def invoke(
        self,
        name: str,
        request: Request,
    ) -> Outcome: ...

    def statistics(self, name: str) -> PoolStatistics | None: ...

    def all_statistics(self) -> dict[str, PoolStatistics]: ...

    def policy_statistics(self, name: str) -> LifecycleStatistics | None:
        """The keep-alive lifecycle of the function's app (None: no policy)."""
        ...

    def logs(self, name: str) -> LogBuffer: ...
