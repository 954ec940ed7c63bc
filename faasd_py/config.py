"""One frozen Config per process, built from flags and FAASD_* environment variables.

The CLI only parses: click reads each flag or its FAASD_* variable (auto_envvar_prefix), builds
a Config and hands it to the part that runs. Nothing else reads the environment for settings.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from faasd_py.scheduler import POLICY_FORMS, HybridConfig, Policy, parse_policy
from faasd_py.storage._base import DEFAULT_MAX_BYTES, DEFAULT_MAX_KEYS, DEFAULT_STORE_TIMEOUT
from faasd_py.storage._latency import LatencyModel

if TYPE_CHECKING:
    from faasd_py.queue import QueuePolicy

DEFAULT_GATEWAY = "http://127.0.0.1:8080"

# Channels between worker and instance (DESIGN.md).
CHANNELS = ("shm", "socket", "net")
# The net channel's bridge and subnet (faasd_py.isolation.netns): the bridge takes the first
# address.
DEFAULT_NET_BRIDGE = "faasd0"
DEFAULT_NET_SUBNET = "10.62.0.0/16"
# Iterations an instance's end of a shm channel spins before it sleeps on its futex: about 50 us
# here, long enough to catch the next invocation of a busy function without a wake-up. 0 suits a
# machine with more instances than cores.
DEFAULT_SHM_SPIN = 2000
# The most iterations the worker's event loop spins for a reply after it sends an invocation
# (adaptive: halved after each miss), instead of sleeping in epoll until the doorbell.
DEFAULT_SHM_WORKER_SPIN = 2000


ISOLATIONS = ("auto", "sandbox", "process")
# How the worker's event loop waits on instances' doorbells (faasd_py.datapath.doorbells): auto
# picks what measured faster where io_uring works, and epoll where it does not.
IO_ENGINES = ("auto", "io_uring", "epoll")


# Keep-alive policies (faasd_py.scheduler): the hybrid histogram has this many bins, so its range
# scales with --bin-width (4 h at the default 1 min; 24 s at 100 ms for tests).
HYBRID_BINS = 240
DEFAULT_POLICY = "hybrid"
DEFAULT_BIN_WIDTH = 60.0
# No policy: every function keeps its floor (com.openfaas.scale.min, 1 by default) and
# instances above it stop after --scale-down-after, as before the policy existed.
NO_POLICY = "none"
LIVE_POLICY_FORMS = f"{POLICY_FORMS}, or none (a floor of 1 instance, no policy)"


def live_policy(text: str, bin_width: float) -> Policy | None:
    """The keep-alive policy the worker runs for `text` (--policy, or a function's
    com.faasd-py.policy annotation); None for "none". ValueError names the accepted forms."""
    if text.strip().lower() == NO_POLICY:
        return None
    try:
        hybrid = HybridConfig(range=HYBRID_BINS * bin_width, bin_width=bin_width)
        return parse_policy(text, hybrid)
    except ValueError as exc:
        if str(exc).startswith("unknown policy"):  # name "none" among the forms too
            raise ValueError(f"unknown policy {text!r}; expected {LIVE_POLICY_FORMS}") from None
        raise


def default_channel() -> str:
    """shm when the native shim is built, else socket."""
    from faasd_py import native

    return "shm" if native.HAS_NATIVE else "socket"


# The one rule for where faasd-py keeps its state, packages and credentials, for every command
# (`build` writes packages where `up` looks for them): --data-dir, else FAASD_DATA_DIR, else
# $XDG_DATA_HOME/faasd-py, else ~/.local/share/faasd-py. The CLI reads the flag and FAASD_DATA_DIR
# (click), then falls back to default_data_dir(), which applies the rest of the rule, so a Config
# built without a data_dir (an embedded server, a benchmark) follows it too.
DATA_DIR_ENV = "FAASD_DATA_DIR"
DATA_DIR_DEFAULT = "$XDG_DATA_HOME/faasd-py, else ~/.local/share/faasd-py"


def default_data_dir() -> Path:
    """The data dir when no --data-dir is given: $FAASD_DATA_DIR, else DATA_DIR_DEFAULT."""
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "faasd-py"


@dataclass(frozen=True)
class Config:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8080
    # Largest request body the gateway accepts (413 beyond it), and largest response a handler
    # may return.
    max_body: int = 16 * 1024 * 1024
    # Invocations that may wait per function when every instance is busy (429 beyond it).
    max_queue: int = 1024
    # Slow and idle clients (gateway/_connections.py): a request's headers must arrive within
    # header_timeout of its first byte (408 after); a connection without a request in progress
    # closes after idle_timeout; with max_connections open, one more is answered 503 and closed.
    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    max_connections: int = 1024
    # An instance above the function's floor is stopped after this long without work.
    scale_down_after: float = 60.0
    # Time for an instance to import its handler and report ready.
    start_timeout: float = 30.0
    # On SIGTERM: how long in-flight invocations may take to finish before they are cut off.
    shutdown_timeout: float = 10.0
    # Bytes of output kept per function for /system/logs (the oldest lines go first); also the
    # bytes a second a function may print (lines beyond are dropped, and a marker counts them).
    log_bytes: int = 1024 * 1024
    # Bytes of every function's logs together (the oldest lines of the largest go first).
    log_total_bytes: int = 64 * 1024 * 1024
    # Instances one function may ask for (com.openfaas.scale.min and .max), and instances this
    # host runs at once (faasd_py.worker._limits).
    max_scale: int = 20
    max_instances: int = 100
    # Memory the instances may reserve together (None: 80% of MemTotal), and what an instance
    # without limits.memory reserves; one that does not fit is not started.
    memory_budget: int | None = None
    instance_memory: int = 128 * 1024 * 1024
    # What a function's zygote (with its spare fork) reserves of the budget while it runs; a
    # zygote that does not fit is not started, and instances start by a fresh exec.
    zygote_memory: int = 32 * 1024 * 1024
    # The interpreter that runs instances.
    python: str = sys.executable
    # The channel of functions that do not choose one (annotation com.faasd-py.channel).
    channel: str = field(default_factory=default_channel)
    shm_spin: int = DEFAULT_SHM_SPIN
    shm_worker_spin: int = DEFAULT_SHM_WORKER_SPIN
    # How instances are isolated: sandbox (namespaces, cgroups, seccomp), process (a plain
    # child process), or auto: sandbox where this machine can run them, else process.
    isolation: str = "auto"
    # The bridge sandboxed instances of `net` functions get a veth on, and its subnet.
    net_bridge: str = DEFAULT_NET_BRIDGE
    net_subnet: str = DEFAULT_NET_SUBNET
    # Host TCP ports that net instances may reach through the bridge (none by default).
    net_allow_ports: tuple[int, ...] = ()
    # How the worker waits on shm instances' doorbells: auto, io_uring or epoll (IO_ENGINES).
    io_engine: str = "auto"
    # Cold starts fork a per-function zygote that has imported the handler, instead of
    # starting a fresh interpreter (functions on the shm and socket channels).
    zygote: bool = True
    # The backing store of context.storage: redis://host:port[/db] (also rediss://, unix://),
    # or None for the embedded one (SQLite in the data dir); see faasd_py.storage.
    storage: str | None = None
    # Seconds added to every store call: remote blob storage, for benchmarks (reports say so).
    storage_latency: float = 0.0
    # Seconds added to the version check (a metadata lookup: an ETag, or versions kept next to
    # the worker) instead of storage_latency; None: storage_latency, the conservative model.
    storage_version_latency: float | None = None
    # Bytes per second at which the store's data calls move their bytes (size / bandwidth is
    # added to each); None: size costs nothing.
    storage_bandwidth: float | None = None
    # Seconds one store call may take before the handler gets StorageUnavailable: well under
    # exec_timeout, so a hung store costs a 503, not a timed-out, replaced instance.
    storage_timeout: float = DEFAULT_STORE_TIMEOUT
    # What one instance's storage calls may hold in the worker: calls in flight, and bytes of
    # their payloads; past either, the worker stops reading the instance's channel until some
    # are answered (the instance blocks, not the worker).
    storage_calls_in_flight: int = 16
    storage_bytes_in_flight: int = 64 * 1024 * 1024
    # Each app's quota in the store: bytes of its objects, and keys. A function's annotations
    # com.faasd-py.storage.max-bytes / max-keys set its own.
    storage_max_bytes: int = DEFAULT_MAX_BYTES
    storage_max_keys: int = DEFAULT_MAX_KEYS
    # The Faa$T per-app cache over the store; a function's com.faasd-py.cache annotation
    # overrides it.
    cache: bool = True
    # Pre-warm an app's new cache from its access statistics (off: for comparisons).
    cache_prewarm: bool = True
    # The keep-alive / pre-warm policy of apps whose functions do not choose one (annotation
    # com.faasd-py.policy): hybrid, hybrid:RANGE, fixed:DURATION, no-unload or none.
    policy: str = DEFAULT_POLICY
    # Seconds per bin of the hybrid histogram (its range is HYBRID_BINS of them): smaller
    # compresses time, for tests and demos.
    bin_width: float = DEFAULT_BIN_WIDTH
    # Async invocations (/async-function/): the queue that holds them, redis://... (Redis
    # Streams, which gateways and `faasd-py queue-worker` processes share) or None for the
    # embedded one (SQLite in the data dir); see faasd_py.queue.
    queue: str | None = None
    # Calls one function's queue may hold (429 beyond), and calls of one function the consumer
    # runs at once; a function's com.faasd-py.queue.max_depth / .concurrency annotations set
    # its own.
    queue_max_depth: int = 10_000
    queue_concurrency: int = 4
    # How long a taken call stays with its consumer without a renewal: a dead consumer's calls
    # are delivered again after it.
    queue_lease: float = 60.0
    # Whether `up` runs a consumer of the queue (off: only queue-worker processes run calls).
    queue_consumer: bool = True
    # Tries to POST a call's result to its X-Callback-Url before giving it up.
    callback_attempts: int = 5

    def __post_init__(self) -> None:
        _ = self.storage_model  # ValueError now for a bad latency or bandwidth
        if self.channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, got {self.channel!r}")
        if self.io_engine not in IO_ENGINES:
            raise ValueError(
                f"io_engine must be one of {', '.join(IO_ENGINES)}, got {self.io_engine!r}"
            )
        if self.isolation not in ISOLATIONS:
            raise ValueError(
                f"isolation must be one of {', '.join(ISOLATIONS)}, got {self.isolation!r}"
            )
        if not (0 < self.bin_width < float("inf")):
            raise ValueError(f"bin_width must be a duration above 0, got {self.bin_width!r}")
        live_policy(self.policy, self.bin_width)  # ValueError now, not at the first deploy
        for name in ("max_scale", "max_instances", "instance_memory"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.zygote_memory < 0:
            raise ValueError(f"zygote_memory must be at least 0, got {self.zygote_memory}")
        if self.memory_budget is not None and self.memory_budget < self.instance_memory:
            raise ValueError(
                f"memory_budget ({self.memory_budget}) must hold one instance "
                f"(instance_memory {self.instance_memory})"
            )
        if not (64 * 1024 <= self.log_bytes <= self.log_total_bytes):
            raise ValueError(
                f"log_bytes must be at least 64Ki and at most log_total_bytes "
                f"({self.log_total_bytes}), got {self.log_bytes}"
            )
        for name in (
            "storage_calls_in_flight",
            "storage_bytes_in_flight",
            "storage_max_bytes",
            "storage_max_keys",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if not (0 < self.storage_timeout < float("inf")):
            raise ValueError(
                f"storage_timeout must be a duration above 0, got {self.storage_timeout!r}"
            )
        if not (0 < self.queue_lease < float("inf")):
            raise ValueError(f"queue_lease must be a duration above 0, got {self.queue_lease!r}")
        for name in ("queue_max_depth", "queue_concurrency", "callback_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        self._check_connections()
        self._check_network()

    def _check_connections(self) -> None:
        for name in ("header_timeout", "idle_timeout"):
            if not (0 < getattr(self, name) < float("inf")):
                raise ValueError(f"{name} must be a duration above 0, got {getattr(self, name)!r}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections!r}")

    def _check_network(self) -> None:
        """ValueError now for a bad --net-bridge or --net-subnet, not at the first net call.
        (Only checked: nothing is made until a net instance starts.)"""
        from faasd_py.isolation.netns import BridgeNetwork, NetworkUnavailable

        try:
            BridgeNetwork(self.net_bridge, self.net_subnet)
        except (NetworkUnavailable, ValueError) as exc:
            raise ValueError(str(exc)) from None

    @property
    def storage_model(self) -> LatencyModel:
        """The delays added to store calls (all off by default; a benchmark setting)."""
        return LatencyModel(
            self.storage_latency, self.storage_version_latency, self.storage_bandwidth
        )

    @property
    def queue_policy(self) -> QueuePolicy:
        """The async-queue policy of functions without annotations for it: OpenFaaS Pro's
        retry defaults, and the queue's limits."""
        # Imported here: the queue package imports faasd_py.spec, which imports this module.
        from faasd_py.queue import QueueLimits, QueuePolicy, RetryPolicy

        return QueuePolicy(RetryPolicy(), QueueLimits(self.queue_max_depth, self.queue_concurrency))

    @property
    def credentials_dir(self) -> Path:
        return self.data_dir / "credentials"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "registry.sqlite3"

    @property
    def packages_dir(self) -> Path:
        return self.data_dir / "packages"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"
