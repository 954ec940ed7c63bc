"""The worker: the function pools of one host, the package lookup, the idle reaper, and the
keep-alive policy's driver per app (faasd_py.worker._apps)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import msgpack

import faasd_py
from faasd_py import native
from faasd_py.cache import CacheStatistics, StorageStatistics, WorkerStorage
from faasd_py.config import Config, live_policy
from faasd_py.datapath import doorbells
from faasd_py.datapath.channel import resolve_kind
from faasd_py.errors import BadRequest, FaasdError, NotFound, SpecError
from faasd_py.isolation.cgroups import remove_dead_runs, remove_tree, run_parent
from faasd_py.isolation.netns import BridgeNetwork
from faasd_py.modes import private_dir
from faasd_py.packages import PackageStore
from faasd_py.protocol import Request
from faasd_py.queue import QueuePolicy, queue_policy
from faasd_py.runs import RUN_LOCKS, RunLock
from faasd_py.scheduler import Policy
from faasd_py.spec import ANNOTATION_POLICY, DEFAULT_NAMESPACE, FunctionSpec
from faasd_py.worker._apps import AppDriver, PolicyStates, decode_state, save_state
from faasd_py.worker._base_zygote import BaseZygote, BaseZygoteStatistics
from faasd_py.worker._forkserver import ZygoteFailed
from faasd_py.worker._instance import FunctionPackage, LaunchSettings
from faasd_py.worker._lifecycle import LifecycleStatistics
from faasd_py.worker._limits import AdmissionStatistics, HostLimits, MemoryAdmission
from faasd_py.worker._logs import LogBudget, LogBudgetStatistics, LogBuffer
from faasd_py.worker._pool import FunctionPool, Outcome, PoolStatistics
from faasd_py.worker._process import interpreter_env, resolve_isolation
from faasd_py.worker._zygote import FunctionLauncher, LauncherStatistics

logger = logging.getLogger(__name__)

_REAP_INTERVAL = 1.0
# How often apps' policy states that learnt something are saved (also on unload and at close).
_SAVE_INTERVAL = 30.0


class Worker:
    """Runs the deployed functions of this host. `start` before use, `close` at the end."""

    def __init__(
        self,
        config: Config,
        storage: WorkerStorage | None = None,
        policy_states: PolicyStates | None = None,
    ) -> None:
        self._config = config
        # The keep-alive policy: a driver per app whose policy is not "none", and the states
        # saved in the registry (by app; kept up to date as they are saved again).
        self._policy_states = policy_states
        self._saved_states: dict[str, str] = {}
        self._apps: dict[str, AppDriver] = {}
        self._saving: set[asyncio.Task[None]] = set()
        # Instances' context.storage: their app's cache over the backing store (faasd_py.cache).
        self._storage = storage
        self._packages = PackageStore(config.packages_dir)
        self._pools: dict[str, FunctionPool] = {}
        # Each deployed function's async-queue policy (its retry and queue annotations).
        self._queue_policies: dict[str, QueuePolicy] = {}
        self._launchers: dict[str, FunctionLauncher] = {}  # each pool's, by function name
        self._logs: dict[str, LogBuffer] = {}
        self._log_budget = LogBudget(config.log_total_bytes)
        self._host = HostLimits.of_host(
            budget=config.memory_budget,
            max_scale=config.max_scale,
            max_instances=config.max_instances,
            instance_memory=config.instance_memory,
        )
        self._admission = MemoryAdmission(self._host.budget, self._host.max_instances)
        self._retiring: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._run: RunLock | None = None  # this run's identity, while sandboxes run
        self.isolation_note: str | None = None  # why instances are not sandboxed, if not
        self._settings = LaunchSettings(
            python=config.python,
            run_dir=config.run_dir,
            runtime_path=config.run_dir / "lib",
            max_body=config.max_body,
            start_timeout=config.start_timeout,
            channel=resolve_kind(None, config.channel),
            shm_spin=config.shm_spin,
            shm_worker_spin=config.shm_worker_spin,
            zygote=config.zygote,
            storage=storage,
        )

    async def start(self) -> None:
        isolation, self.isolation_note = await asyncio.to_thread(
            resolve_isolation, self._config.isolation
        )
        self._settings = replace(self._settings, isolation=isolation)
        # What shm doorbells wait on in this loop: probed now, so that `up` says it (and a
        # requested io_uring that cannot run stops the start here).
        doorbells.configure(self._config.io_engine)
        if isolation == "sandbox":  # the bridge itself is made when a net instance first needs it
            config = self._config
            network = BridgeNetwork(config.net_bridge, config.net_subnet, config.net_allow_ports)
            self._settings = replace(self._settings, network=network)
        if isolation == "sandbox":
            await self._start_run()
        try:
            shutil.rmtree(self._config.run_dir, ignore_errors=True)  # left by an earlier crash
            private_dir(self._config.run_dir)
            _link_runtime(self._settings.runtime_path)
            if isolation == "sandbox" and self._config.zygote:
                await self._start_base_zygote()
            if self._policy_states is not None:
                self._saved_states = await self._policy_states.get_policy_states()
        except BaseException:
            await self._close_base_zygote()
            await self._end_run()
            raise
        self._reaper = asyncio.create_task(self._reap_forever())

    async def _start_base_zygote(self) -> None:
        """Sandboxes fork from a base zygote (an unloaded app starts in a fork's time); one
        that cannot start leaves them to start afresh, with a warning."""
        settings = self._settings
        base = BaseZygote(
            settings.python,
            settings.runtime_path,
            interpreter_env(settings.runtime_path),
            settings.start_timeout,
            settings.cgroup_parent,
        )
        try:
            await base.start()
        except ZygoteFailed as exc:
            logger.warning("%s; sandboxes start afresh", exc)
            return
        self._settings = replace(settings, base_zygote=base)

    async def _close_base_zygote(self) -> None:
        base = self._settings.base_zygote
        if base is not None:
            self._settings = replace(self._settings, base_zygote=None)
            await base.close()

    @property
    def base_zygote(self) -> BaseZygote | None:
        """What sandboxes fork from (None: they start afresh, or are not sandboxes)."""
        return self._settings.base_zygote

    def base_zygote_statistics(self) -> BaseZygoteStatistics | None:
        """The base zygote's pid and forks; None where sandboxes do not fork from one."""
        base = self._settings.base_zygote
        return None if base is None else base.statistics()

    async def _start_run(self) -> None:
        """Take this run's identity (its sandboxes' cgroups go under its run id), then remove
        what runs that are no longer running left behind, however young: never a live run's."""
        try:
            self._run = await asyncio.to_thread(RunLock.acquire)
        except OSError as exc:
            raise FaasdError(f"cannot make this run's lock file in {RUN_LOCKS}: {exc}") from exc
        parent = run_parent(self._run.id)
        self._settings = replace(self._settings, cgroup_parent=parent)
        swept = await asyncio.to_thread(remove_dead_runs)
        if swept:
            logger.info("removed the cgroups of %d faasd-py runs that no longer run", swept)

    async def _end_run(self) -> None:
        """After the last instance: this run's cgroups go, and its lock with them."""
        run, self._run = self._run, None
        if run is not None:
            await asyncio.to_thread(remove_tree, self._settings.cgroup_parent)
            run.release()

    @property
    def run_id(self) -> str | None:
        """This run's id, which names its cgroups (faasd_py.runs); None without sandboxes."""
        return None if self._run is None else self._run.id

    @property
    def cgroup_parent(self) -> str:
        """Where this worker's sandboxes' cgroups are, under each hierarchy's root."""
        return self._settings.cgroup_parent

    # --- deployment ----------------------------------------------------------------------------

    @property
    def isolation(self) -> str:
        """How instances run here: "sandbox" or "process"."""
        return self._settings.isolation

    @property
    def zygote(self) -> bool:
        """Whether cold starts fork a per-function zygote (shm and socket channels)."""
        return self._settings.zygote

    def check_deployable(self, spec: FunctionSpec) -> FunctionPackage:
        self._host.check(spec)  # instances, CPU and memory within what this host admits
        resolve_kind(spec.channel, self._settings.channel)  # shm needs the native shim
        self._app_policy(spec)  # SpecError (400) for a policy this worker cannot run
        self._queue_policy(spec)  # BadAnnotation (400) for retry or queue annotations
        package = self._packages.get(spec.image)
        if package is None:
            raise BadRequest(
                f"image {spec.image!r} is not in the package store {self._packages.root}; "
                "build it there first: `faasd-py build -f stack.yml` with the data dir of "
                f"`faasd-py up` (--data-dir {self._config.data_dir} or FAASD_DATA_DIR)"
            )
        return FunctionPackage(function_dir=package.function_dir, deps_dir=package.deps_dir)

    def apply(self, spec: FunctionSpec, secrets: Mapping[str, bytes]) -> None:
        """Deploy or update a function: a new pool serves new invocations at once; an old
        pool finishes its in-flight work in the background."""
        package = self.check_deployable(spec)
        ref = spec.ref  # what the pools, launchers and logs are keyed by
        logs = self._logs.setdefault(ref, LogBuffer(self._config.log_bytes, self._log_budget))
        text, policy = self._app_policy(spec)
        self._queue_policies[ref] = self._queue_policy(spec)
        driver = self._apps.get(spec.app)
        if driver is not None and driver.policy_text != text:
            self._drop_app(driver)  # the app's policy changed: learn under the new one
            driver = None
        if driver is None and policy is not None:
            driver = self._new_app(spec.app, text, policy)

        # An explicit com.openfaas.scale.min of 0 is OpenFaaS's scale to zero: a function
        # deployed (or restored) with it starts with no instance, whatever the policy.
        scaled_to_zero = spec.scale_min_label == 0 and ref not in self._pools
        launcher = FunctionLauncher(
            package,
            self._settings,
            resolve_kind(spec.channel, self._settings.channel),
            self._admission,
            self._config.zygote_memory,
        )
        self._launchers[ref] = launcher
        pool = FunctionPool(
            spec,
            dict(secrets),
            launcher,
            logs,
            self._config.max_queue,
            managed=policy is not None,
            loaded=(driver is None or driver.lifecycle.loaded) and not scaled_to_zero,
            admission=self._admission,
            reserve=self._host.reserve(spec),
        )
        old = self._pools.get(ref)
        self._pools[ref] = pool
        if old is not None:
            pool.carry_over(old)
            self._retire(old, f"function {ref} was updated; retry")
            self._forget_empty_apps()  # its app label may have changed
        pool.ensure_floor()
        if scaled_to_zero and driver is not None:
            driver.scaled_to_zero()  # unloaded until its first call, unless a sibling is loaded

    def remove(self, name: str) -> None:
        pool = self._pools.pop(name, None)
        if pool is None:
            raise NotFound(f"function {name!r} not found")
        self._launchers.pop(name, None)
        self._queue_policies.pop(name, None)
        self._retire(pool, f"function {name} was removed")
        self._forget_empty_apps()
        logs = self._logs.pop(name, None)
        if logs is not None:
            logs.close()

    def _retire(self, pool: FunctionPool, reason: str) -> None:
        task = asyncio.create_task(pool.close(reason, pool.spec.exec_timeout))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def scale(self, name: str, replicas: int) -> None:
        pool = self._pool(name)
        pool.scale(replicas)
        driver = self._apps.get(pool.spec.app)
        if replicas == 0 and driver is not None:
            driver.scaled_to_zero()

    def update_secret(self, name: str, value: bytes, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        """A secret's new value reaches every function of its namespace that uses it: their
        running instances read it from their next open of the file, with no restart."""
        for pool in self._pools.values():
            if pool.spec.namespace == namespace and name in pool.spec.secrets:
                pool.update_secrets({name: value})

    def _queue_policy(self, spec: FunctionSpec) -> QueuePolicy:
        return queue_policy(spec.annotations, self._config.queue_policy)

    def queue_policies(self) -> dict[str, QueuePolicy]:
        """The async-queue policy of every deployed function, by ref (what the queue's
        consumer runs and the gateway accepts calls for)."""
        return dict(self._queue_policies)

    def queue_policy(self, name: str) -> QueuePolicy | None:
        """The async-queue policy of function `name`; None when it is not deployed here."""
        return self._queue_policies.get(name)

    # --- the keep-alive policy -----------------------------------------------------------------

    def _app_policy(self, spec: FunctionSpec) -> tuple[str, Policy | None]:
        """The policy of `spec`'s app: the com.faasd-py.policy annotation of its functions
        (which must agree where given), else --policy. SpecError names the annotation."""
        field = f"annotations.{ANNOTATION_POLICY}"
        asked = {spec.policy} if spec.policy is not None else set()
        for other in self._pools.values():
            sibling = other.spec.app == spec.app and other.spec.ref != spec.ref
            if sibling and other.spec.policy is not None:
                asked.add(other.spec.policy)
        if len(asked) > 1:
            raise SpecError(
                field,
                f"the functions of app {spec.app!r} ask for different policies "
                f"({', '.join(sorted(asked))}); an app has one policy",
            )
        text = asked.pop() if asked else self._config.policy
        try:
            return text, live_policy(text, self._config.bin_width)
        except ValueError as exc:
            raise SpecError(
                field, f"{exc} (with --bin-width {self._config.bin_width:g}s)"
            ) from None

    def _new_app(self, app: str, text: str, policy: Policy) -> AppDriver:
        def pools() -> list[FunctionPool]:
            return [pool for pool in self._pools.values() if pool.spec.app == app]

        saved = decode_state(self._saved_states.get(app))
        driver = AppDriver(app, text, policy, pools, saved, on_unload=self._save_soon)
        self._apps[app] = driver
        return driver

    def _drop_app(self, driver: AppDriver) -> None:
        driver.close()
        del self._apps[driver.app]
        self._save_soon(driver)

    def _forget_empty_apps(self) -> None:
        apps = {pool.spec.app for pool in self._pools.values()}
        for driver in [d for app, d in self._apps.items() if app not in apps]:
            self._drop_app(driver)

    def _save_soon(self, driver: AppDriver) -> None:
        text = driver.unsaved_state()
        if text is None:
            return
        self._saved_states[driver.app] = text
        task = asyncio.create_task(save_state(self._policy_states, driver))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    def app_statistics(self) -> dict[str, LifecycleStatistics]:
        """Per app under a policy: its lifecycle, windows and what the policy learnt."""
        return {app: driver.statistics() for app, driver in self._apps.items()}

    def policy_statistics(self, name: str) -> LifecycleStatistics | None:
        """The lifecycle of the app of function `name` (None: no policy, or not deployed)."""
        pool = self._pools.get(name)
        driver = None if pool is None else self._apps.get(pool.spec.app)
        return None if driver is None else driver.statistics()

    # --- invocation and status -----------------------------------------------------------------

    async def invoke(
        self,
        name: str,
        request: Request,
    ) -> Outcome:
        pool = self._pool(name)
        driver = self._apps.get(pool.spec.app)
        if driver is None:
            return await pool.invoke(request)
        # The same driver sees the end, even if a redeploy replaces it meanwhile.
        driver.arrival()
        try:
            return await pool.invoke(request)
        finally:
            driver.end()

    async def load_policy_states(self) -> None:
        """Read the apps' saved policy states again: in a cluster, an app that arrives here
        keeps what the policy learnt of it on the worker it ran on before."""
        if self._policy_states is not None:
            self._saved_states = await self._policy_states.get_policy_states()

    def reserved_by_app(self) -> dict[str, int]:
        """Bytes each app's running and starting instances reserve here."""
        reserved: dict[str, int] = {}
        for pool in self._pools.values():
            stats = pool.statistics()
            own = (stats.available + stats.starting) * self._host.reserve(pool.spec)
            reserved[pool.spec.app] = reserved.get(pool.spec.app, 0) + own
        return reserved

    def apps_of_functions(self) -> dict[str, str]:
        """Each deployed function's app, by function ref."""
        return {ref: pool.spec.app for ref, pool in self._pools.items()}

    def statistics(self, name: str) -> PoolStatistics | None:
        pool = self._pools.get(name)
        return None if pool is None else pool.statistics()

    def all_statistics(self) -> dict[str, PoolStatistics]:
        return {name: pool.statistics() for name, pool in self._pools.items()}

    @property
    def storage(self) -> WorkerStorage | None:
        """The instances' context.storage: their apps' caches over the store (None: none)."""
        return self._storage

    @property
    def storage_name(self) -> str | None:
        """The backing store of the instances' context.storage, as errors name it."""
        return None if self._storage is None else self._storage.manager.store.name

    def cache_statistics(self) -> dict[str, CacheStatistics]:
        """Per loaded app, its cache's figures (none when storage or the cache is off)."""
        return {} if self._storage is None else self._storage.manager.statistics()

    def storage_statistics(self) -> dict[str, StorageStatistics]:
        """Per app, its instances' storage calls in flight (none when storage is off)."""
        return {} if self._storage is None else self._storage.statistics()

    def launcher_statistics(self, name: str) -> LauncherStatistics:
        """How the function's instances were started: zygote, forks, execs, fallbacks."""
        self._pool(name)  # NotFound if absent
        return self._launchers[name].statistics()

    def logs(self, name: str) -> LogBuffer:
        if name not in self._logs:
            raise NotFound(f"function {name!r} not found")
        return self._logs[name]

    def admission_statistics(self) -> AdmissionStatistics:
        """The memory and instances reserved on this host, against its budget."""
        return self._admission.statistics()

    def log_statistics(self) -> LogBudgetStatistics:
        """The bytes all functions' logs hold, against --log-total-bytes."""
        return self._log_budget.statistics()

    def _pool(self, name: str) -> FunctionPool:
        pool = self._pools.get(name)
        if pool is None:
            raise NotFound(f"function {name!r} not found; deploy it with `faasd-py deploy`")
        return pool

    # --- lifecycle -----------------------------------------------------------------------------

    async def _reap_forever(self) -> None:
        saved_at = time.monotonic()
        while True:
            await asyncio.sleep(_REAP_INTERVAL)
            now = time.monotonic()
            for pool in self._pools.values():
                pool.reap(now, self._config.scale_down_after)
            if now - saved_at >= _SAVE_INTERVAL:
                saved_at = now
                for driver in self._apps.values():
                    self._save_soon(driver)

    def reject_new(self, reason: str) -> None:
        """First step of shutdown: queued and new invocations get 503, in-flight ones go on."""
        for pool in self._pools.values():
            pool.reject_new(reason)

    async def close(self, drain_timeout: float) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for driver in list(self._apps.values()):
            self._drop_app(driver)  # timers off, states saved
        await asyncio.gather(*self._saving, return_exceptions=True)
        pools, self._pools = list(self._pools.values()), {}
        reason = "faasd-py is shutting down"
        await asyncio.gather(*(p.close(reason, drain_timeout) for p in pools))
        await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._storage is not None:  # every instance is gone: save statistics, close the store
            await self._storage.close()
        for logs in self._logs.values():
            logs.close()
        doorbells.close_for(asyncio.get_running_loop())  # every shm channel is closed now
        if self._settings.network is not None:
            await asyncio.to_thread(self._settings.network.close)
        await self._close_base_zygote()
        await self._end_run()
        # Every instance and zygote is gone: nothing of this run's folder is needed any more
        # (its secrets copies, the runtime links, instances' folders).
        shutil.rmtree(self._config.run_dir, ignore_errors=True)


def _link_runtime(path: Path) -> None:
    """A folder that holds only what the sandbox runtime imports: faasd_py and msgpack, and
    cffi's backend module when the native shim is built (its compiled module needs it).
    Readable by all: sandboxes list it as "other" (faasd_py.modes)."""
    path.mkdir(mode=0o755, exist_ok=True)
    path.chmod(0o755)  # whatever the umask
    targets: dict[str, Path] = {}
    for module in (faasd_py, msgpack):
        assert module.__file__ is not None
        targets[module.__name__] = Path(module.__file__).parent
    backend = importlib.util.find_spec("_cffi_backend") if native.HAS_NATIVE else None
    if backend is not None and backend.origin is not None:
        targets[Path(backend.origin).name] = Path(backend.origin)
    for name, target in targets.items():
        link = path / name
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.symlink(target, link)
