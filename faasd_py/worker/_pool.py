"""The instances of one function: dispatch to a free slot, queue when all are busy, scale.

Each instance runs up to `max_inflight` invocations at once. An invocation takes the least
loaded ready instance; when every slot is taken it waits in a bounded FIFO queue (429 beyond
it) while the pool starts instances, up to `com.openfaas.scale.max`. Idle instances above the
floor (`com.openfaas.scale.min`, or the replicas asked for by scale-function) are stopped by
`reap`. A crashed or timed-out instance is replaced. Instances come from the pool's Launcher
(a fork of the function's zygote, or a fresh exec), which the pool closes with itself.

Under a keep-alive policy (a *managed* pool) the floor is the larger of two: the user's pin
(an explicit com.openfaas.scale.min label, or scale-function's replicas) and the policy's
(1 while the app is loaded, 0 once unloaded; the app's lifecycle driver sets it with `load`
and `unload`). Without a policy the floor is scale.min, 1 by default, as in OpenFaaS.
Unloading a pool down to no instance also stops its zygote and spare (`Launcher.unload`):
the policy counts an unloaded app as holding no memory, so nothing of it stays resident, and
the next load (a pre-warm or a cold start) starts a zygote again.

The pool also keeps the figures the policy is judged by: instances started by a pre-warm,
invocations that found one ready (pre-warm hits), and instance-seconds loaded and idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Protocol

from faasd_py.errors import FaasdError, InvocationTimeout, Overloaded, Unavailable
from faasd_py.protocol import Request, Result
from faasd_py.spec import FunctionSpec
from faasd_py.worker._instance import Instance
from faasd_py.worker._limits import MemoryAdmission
from faasd_py.worker._logs import LogBuffer, LogEntry

logger = logging.getLogger(__name__)


class Launcher(Protocol):
    """Starts the instances of one function (faasd_py.worker._zygote.FunctionLauncher)."""

    async def launch(
        self, spec: FunctionSpec, secrets: Mapping[str, bytes], logs: LogBuffer
    ) -> Instance: ...

    def update_secrets(self, secrets: Mapping[str, bytes]) -> None:
        """New values for some of the function's secrets, for the instances it started."""
        ...

    async def close(self) -> None:
        """The pool is done: release what the launcher keeps (its zygote)."""
        ...

    async def unload(self) -> None:
        """The function has no instance left and is unloaded: stop its zygote and spare, if
        no launch is under way; the next launch starts them again."""
        ...


# After this many start failures in a row the pool stops restarting instances on its own and
# waits for the next invocation (which reports the failure) or a redeploy.
_MAX_START_FAILURES = 3


@dataclass(frozen=True, slots=True)
class Outcome:
    """An invocation's result and where its time went."""

    result: Result
    instance: str
    queue_seconds: float
    cold_start_seconds: float
    exec_seconds: float
    # Time between the gateway and a remote worker, both ways (None: the worker is in process).
    network_seconds: float | None = None

    def server_timing(self, total: float) -> str:
        """The Server-Timing header of the invocation, `total` seconds in all where it ran."""
        network = (
            ""
            if self.network_seconds is None
            else f"network;dur={self.network_seconds * 1e3:.3f}, "
        )
        return (
            f"{network}queue;dur={self.queue_seconds * 1e3:.3f}, "
            f"cold-start;dur={self.cold_start_seconds * 1e3:.3f}, "
            f"execution;dur={self.exec_seconds * 1e3:.3f}, "
            f"total;dur={total * 1e3:.3f}"
        )


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    replicas: int  # the floor asked for (or the instances running, if more)
    available: int  # ready instances
    starting: int
    queued: int
    inflight: int
    invocations: int
    cold_starts: int
    prewarm_loads: int = 0  # instances started by a pre-warm
    prewarm_hits: int = 0  # invocations that found a pre-warmed instance ready
    instance_seconds: float = 0.0  # ready instances x seconds
    idle_instance_seconds: float = 0.0  # ... of which without an invocation (wasted)
    loaded: bool = True  # the policy's floor: whether the app is loaded (managed pools)


class FunctionPool:
    def __init__(
        self,
        spec: FunctionSpec,
        secrets: Mapping[str, bytes],
        launcher: Launcher,
        logs: LogBuffer,
        max_queue: int,
        *,
        managed: bool = False,
        loaded: bool = True,
        admission: MemoryAdmission | None = None,
        reserve: int = 0,
    ) -> None:
        self.spec = spec
        # Read once: a spec's settings are parsed from its environment on every access.
        self._max_inflight = spec.max_inflight
        self._secrets = dict(secrets)
        self._launcher = launcher
        self._logs = logs
        self._max_queue = max_queue
        self._instances: list[Instance] = []
        self._starting = 0
        self._waiters: deque[asyncio.Future[Instance]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        # The user's pin, and (managed) the policy's floor: see the module's docstring.
        self._managed = managed
        explicit = spec.scale_min_label
        self._pin = (explicit or 0) if managed else spec.scale_min
        self._policy_floor = 1 if managed and loaded else 0
        self._closed: str | None = None
        self._invocations = 0
        self._cold_starts = 0
        self._start_failures = 0
        self._last_start_error: FaasdError | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight = 0
        self._prewarmed: set[str] = set()  # ids of pre-warmed instances not yet used
        self._prewarm_loads = 0
        self._prewarm_hits = 0
        self._instance_seconds = 0.0
        self._idle_seconds = 0.0
        self._accounted_at = time.monotonic()
        self._launched = False  # whether the launcher may hold a zygote to unload
        # The host's memory admission: each instance reserves `reserve` bytes from starting
        # until it has exited (faasd_py.worker._limits).
        self._admission = admission
        self._reserve = reserve
        self._holding: set[Instance] = set()  # started instances holding a reservation

    @property
    def _floor(self) -> int:
        return max(self._pin, self._policy_floor)

    def _account(self) -> None:
        """Add the instance-seconds since the last change; called before every change to
        the instances or their in-flight counts, so that the count between is constant."""
        now = time.monotonic()
        elapsed, self._accounted_at = now - self._accounted_at, now
        ready = len(self._instances)
        busy = sum(1 for i in self._instances if i.inflight > 0)
        self._instance_seconds += elapsed * ready
        self._idle_seconds += elapsed * (ready - busy)

    # --- invocation ----------------------------------------------------------------------------

    async def invoke(
        self,
        request: Request,
    ) -> Outcome:
        if self._closed is not None:
            raise Unavailable(self._closed)
        queued_at = time.monotonic()
        self._account()
        instance = self._take_slot()
        waited = 0.0
        if instance is None:
            instance = await self._wait_for_slot()
            waited = time.monotonic() - queued_at
        cold = waited > 0 and instance.served == 0
        if cold:
            self._cold_starts += 1
        if instance.id in self._prewarmed:
            self._prewarmed.discard(instance.id)
            if not cold:  # one that waited for a pre-warm still loading paid a cold start
                self._prewarm_hits += 1
        self._inflight += 1
        self._idle.clear()
        try:
            result = await instance.invoke(request)
        except InvocationTimeout:
            # Out of the pool at once, so no other invocation is sent to it while it dies.
            if instance in self._instances:
                self._account()
                self._instances.remove(instance)
            self._spawn(instance.kill("was replaced after an invocation timed out"))
            raise
        finally:
            self._account()
            self._invocations += 1
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()
            self._release(instance)
        return Outcome(
            result=result,
            instance=instance.id,
            queue_seconds=0.0 if cold else waited,
            cold_start_seconds=waited if cold else 0.0,
            exec_seconds=result.seconds,
        )

    def _take_slot(self) -> Instance | None:
        best: Instance | None = None
        for instance in self._instances:
            free = instance.inflight < self._max_inflight and instance.alive
            if free and (best is None or instance.inflight < best.inflight):
                best = instance
        if best is not None:
            best.inflight += 1
        return best

    async def _wait_for_slot(self) -> Instance:
        if len(self._waiters) >= self._max_queue:
            raise Overloaded(
                f"function {self.spec.service} has {len(self._waiters)} invocations waiting; "
                "retry later or raise com.openfaas.scale.max",
                retry_after=1.0,
            )
        loop = self._loop
        if loop is None:  # kept: asking asyncio for it costs a getpid system call on 3.11
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Instance] = loop.create_future()
        self._waiters.append(future)
        self._scale_up_for_waiters()
        if not self._instances and self._starting == 0 and self._admission is not None:
            # No instance will come for it: the host's memory is taken (a start that failed
            # instead has answered the waiters already).
            self._waiters.remove(future)
            raise Overloaded(
                f"function {self.spec.service} has no instance and this host cannot start one "
                f"now: {self._admission.describe()}; retry later",
                retry_after=1.0,
            )
        try:
            return await future
        except asyncio.CancelledError:
            if future in self._waiters:
                self._waiters.remove(future)
            elif future.done() and not future.cancelled() and future.exception() is None:
                self._release(future.result())  # a slot was granted just as we gave up
            raise

    def _release(self, instance: Instance) -> None:
        instance.inflight -= 1
        self._dispatch_waiters()

    def _dispatch_waiters(self) -> None:
        while self._waiters:
            instance = self._take_slot()
            if instance is None:
                return
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled meanwhile
                instance.inflight -= 1
                continue
            waiter.set_result(instance)

    # --- scaling -------------------------------------------------------------------------------

    def _scale_up_for_waiters(self) -> None:
        coming = self._starting * self._max_inflight
        missing = len(self._waiters) - coming
        wanted = math.ceil(missing / self._max_inflight) if missing > 0 else 0
        room = self.spec.scale_max - len(self._instances) - self._starting
        for _ in range(min(wanted, room)):
            if not self._start_instance():
                return

    def ensure_floor(self) -> None:
        """Start instances until the floor is met (unless starts keep failing)."""
        if self._closed is not None or self._start_failures >= _MAX_START_FAILURES:
            return
        for _ in range(self._floor - len(self._instances) - self._starting):
            if not self._start_instance():
                return

    def _start_instance(self, prewarm: bool = False) -> bool:
        """Start an instance if the host admits one; False (and a retry once memory is given
        back) if not."""
        admission = self._admission
        if admission is not None and not admission.try_reserve(self._reserve, self, self._retry):
            return False
        self._launched = True
        self._starting += 1
        self._spawn(self._run_start(prewarm))
        return True

    def _retry(self) -> None:
        """Memory was given back on the host: start what this pool could not."""
        if self._closed is None:
            self.ensure_floor()
            self._scale_up_for_waiters()

    def _give_back(self) -> None:
        if self._admission is not None:
            self._admission.release(self._reserve)

    async def _run_start(self, prewarm: bool = False) -> None:
        try:
            instance = await self._launcher.launch(self.spec, self._secrets, self._logs)
        except BaseException as exc:
            self._starting -= 1
            self._give_back()
            if not isinstance(exc, Exception):
                raise
            self._start_failed(exc)
            return
        self._starting -= 1
        self._holding.add(instance)
        if self._closed is not None:
            await instance.stop()
            self._let_go(instance)
            return
        self._start_failures = 0
        instance.on_exit(self._instance_exited)
        self._account()
        self._instances.append(instance)
        if prewarm:
            self._prewarmed.add(instance.id)
        self._dispatch_waiters()
        if self._managed and self._floor == 0:
            # Unloaded while it started, and no invocation took it: not kept for the reaper.
            self.reap(now=math.inf)

    def _start_failed(self, exc: Exception) -> None:
        error = exc if isinstance(exc, FaasdError) else FaasdError(f"cannot start: {exc}")
        self._start_failures += 1
        self._last_start_error = error
        self._logs.append(LogEntry(time.time(), "worker", error.message, "worker"))
        logger.warning("%s", error.message)
        if not self._instances and self._starting == 0:
            # Nothing will serve the queue: tell every waiter why now, not at their timeout.
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(error)
        else:
            self._scale_up_for_waiters()

    def _let_go(self, instance: Instance) -> None:
        """The instance has exited: its memory is the host's again."""
        if instance in self._holding:
            self._holding.discard(instance)
            self._give_back()

    def _instance_exited(self, instance: Instance) -> None:
        self._let_go(instance)
        self._prewarmed.discard(instance.id)
        if instance in self._instances:
            self._account()
            self._instances.remove(instance)
        if self._closed is None:
            self.ensure_floor()
            self._scale_up_for_waiters()

    def carry_over(self, previous: FunctionPool) -> None:
        """Keep counting from a pool this one replaces (an update), as OpenFaaS does."""
        self._invocations += previous._invocations
        self._cold_starts += previous._cold_starts
        self._prewarm_loads += previous._prewarm_loads
        self._prewarm_hits += previous._prewarm_hits
        previous._account()
        self._instance_seconds += previous._instance_seconds
        self._idle_seconds += previous._idle_seconds

    def scale(self, replicas: int) -> None:
        """Set the user's pin (clamped to scale.max) and start or stop instances to meet it
        now. Zero on a managed pool also unloads it (OpenFaaS: scale to zero now)."""
        self._pin = max(0, min(replicas, self.spec.scale_max))
        if self._pin == 0:
            self._policy_floor = 0
        self._start_failures = 0
        self.ensure_floor()
        self.reap(now=math.inf)

    def update_secrets(self, secrets: Mapping[str, bytes]) -> None:
        """New values for the function's secrets among `secrets` (others are ignored): its
        running instances read them from their next open of the file, with no restart, and
        instances started from now on too."""
        changed = {name: value for name, value in secrets.items() if name in self.spec.secrets}
        self._secrets.update(changed)
        self._launcher.update_secrets(changed)

    def load(self, *, prewarm: bool) -> None:
        """The policy loads the app: keep at least one instance, and start it now if there is
        none (counted as pre-warmed when `prewarm`, i.e. ahead of demand)."""
        self._policy_floor = 1
        if self._closed is not None or self._start_failures >= _MAX_START_FAILURES:
            return
        for _ in range(self._floor - len(self._instances) - self._starting):
            if not self._start_instance(prewarm=prewarm):
                return
            if prewarm:
                self._prewarm_loads += 1

    def unload(self) -> None:
        """The policy unloads the app: stop its idle instances down to the user's pin and,
        when none is left, its zygote."""
        self._policy_floor = 0
        self.reap(now=math.inf)

    @property
    def loaded(self) -> bool:
        return self._policy_floor > 0

    def reap(self, now: float, idle_after: float = 0.0) -> None:
        """Stop instances idle since `now - idle_after` while more than the floor run."""
        excess = len(self._instances) + self._starting - self._floor
        stopping = []
        for instance in sorted(self._instances, key=lambda i: i.last_used):
            if excess <= 0:
                break
            if instance.inflight == 0 and now - instance.last_used >= idle_after:
                self._account()
                self._instances.remove(instance)
                self._prewarmed.discard(instance.id)
                stopping.append(instance)
                excess -= 1
        unloaded = self._managed and self._launched and self._floor == 0
        if stopping or (unloaded and not self._instances):
            self._spawn(self._stop_idle(stopping))

    async def _stop_idle(self, instances: list[Instance]) -> None:
        await asyncio.gather(*(i.stop("was stopped after being idle") for i in instances))
        # Unloaded and empty: the zygote goes too (only now, as its forks die with it).
        idle = not self._instances and self._starting == 0 and self._floor == 0
        if self._managed and idle and self._closed is None:
            self._launched = False
            await self._launcher.unload()

    # --- teardown ------------------------------------------------------------------------------

    def reject_new(self, reason: str) -> None:
        """Refuse new invocations and empty the queue with 503s; in-flight ones go on."""
        self._closed = reason
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(Unavailable(reason))

    async def close(self, reason: str, drain_timeout: float) -> None:
        """Reject new work, let in-flight invocations finish (up to the timeout), stop all."""
        self.reject_new(reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                await self._idle.wait()
        self._account()
        instances, self._instances = self._instances, []
        await asyncio.gather(*(i.stop("was stopped") for i in instances))
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await task
        for instance in list(self._holding):  # stopped: exited, whether or not it said so
            self._let_go(instance)
        if self._admission is not None:
            self._admission.forget(self)
        await self._launcher.close()

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def statistics(self) -> PoolStatistics:
        self._account()
        available = sum(1 for i in self._instances if i.alive)
        return PoolStatistics(
            replicas=max(self._floor, available + self._starting),
            available=available,
            starting=self._starting,
            queued=len(self._waiters),
            inflight=self._inflight,
            invocations=self._invocations,
            cold_starts=self._cold_starts,
            prewarm_loads=self._prewarm_loads,
            prewarm_hits=self._prewarm_hits,
            instance_seconds=self._instance_seconds,
            idle_instance_seconds=self._idle_seconds,
            loaded=self._floor > 0,
        )
