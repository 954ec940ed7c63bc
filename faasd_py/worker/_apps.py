"""The async side of the keep-alive policy: one driver per app carries out its lifecycle.

An app is the functions with the same com.faasd-py.app label (FunctionSpec.app). The worker
tells the app's driver when an invocation of any of them arrives and ends; the driver feeds
its pure `AppLifecycle` (faasd_py.worker._lifecycle) with the monotonic clock, arms one timer
for the lifecycle's next deadline, and applies the actions to the app's pools: `load` (an
instance, through the launcher as a cold start is; pre-warmed when ahead of demand) or
`unload` (instances down to each function's pin, then the zygote). The policy state is
restored from the registry when the driver is made and saved when the app unloads,
periodically and at shutdown (`PolicyStates`), so that a restart keeps what was learnt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from faasd_py.scheduler import Policy
from faasd_py.worker._lifecycle import Action, AppLifecycle, LifecycleStatistics
from faasd_py.worker._pool import FunctionPool

logger = logging.getLogger(__name__)


class PolicyStates(Protocol):
    """Where apps' policy states are kept between runs (faasd_py.store.SqliteRegistry)."""

    async def get_policy_states(self) -> dict[str, str]:
        """Every app's saved state (JSON text), by app."""
        ...

    async def put_policy_state(self, app: str, state: str) -> None: ...


class AppDriver:
    """Carries out one app's lifecycle (see the module's docstring)."""

    def __init__(
        self,
        app: str,
        policy_text: str,
        policy: Policy,
        pools: Callable[[], list[FunctionPool]],
        saved: Mapping[str, Any] | None,
        on_unload: Callable[[AppDriver], None],
    ) -> None:
        self.app = app
        self.policy_text = policy_text
        self._pools = pools
        self._on_unload = on_unload
        app_policy = policy.new_app()
        if saved is not None:
            try:
                app_policy = policy.restore_app(saved)
            except ValueError as exc:  # saved under another policy, or damaged: learn again
                logger.info("app %s: not restoring its policy state (%s)", app, exc)
        # After a deploy or a restart an app starts loaded, as functions always did.
        self.lifecycle = AppLifecycle(policy.name, app_policy, loaded=True)
        self._saved_observations = 0
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._apply(self.lifecycle.deployed(time.monotonic()))

    # --- events from the worker ----------------------------------------------------------------

    def arrival(self) -> None:
        self._apply(self.lifecycle.arrival(time.monotonic()))

    def end(self) -> None:
        self._apply(self.lifecycle.end(time.monotonic()))

    def scaled_to_zero(self) -> None:
        """scale-function set a pool to zero: when none of the app's pools is loaded now,
        the app is unloaded until its next arrival."""
        if not any(pool.loaded for pool in self._pools()):
            self.lifecycle.unloaded_by_user()
            self._rearm()

    def _fire(self) -> None:
        self._timer = None
        self._apply(self.lifecycle.due(time.monotonic()))

    def _apply(self, actions: list[Action]) -> None:
        if self._closed:
            return  # replaced (a redeploy changed its policy): the new driver acts
        for action in actions:
            for pool in self._pools():
                if action is Action.UNLOAD:
                    pool.unload()
                else:
                    pool.load(prewarm=action is Action.PREWARM)
            if action is Action.UNLOAD:
                self._on_unload(self)
        self._rearm()

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.lifecycle.next_deadline
        if deadline is not None and not self._closed:
            delay = max(0.0, deadline - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    # --- state ---------------------------------------------------------------------------------

    def unsaved_state(self) -> str | None:
        """The policy state as JSON when it learnt something since the last save, else None
        (policies that learn nothing have nothing to keep, and must not overwrite what a
        learning policy of the same app saved before)."""
        policy = self.lifecycle.policy
        if not policy.learns or self.lifecycle.observations == self._saved_observations:
            return None
        return json.dumps(policy.to_state())

    def mark_saved(self, observations: int) -> None:
        self._saved_observations = observations

    def statistics(self) -> LifecycleStatistics:
        return self.lifecycle.statistics()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def decode_state(text: str | None) -> Mapping[str, Any] | None:
    """A saved state, or None when there is none or it is not a JSON object."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def save_state(states: PolicyStates | None, driver: AppDriver) -> None:
    """Save the driver's state if it learnt something since; a failure is logged, not raised
    (the state is a cache of what was learnt, and the app keeps running)."""
    text = driver.unsaved_state()
    if states is None or text is None:
        return
    observations = driver.lifecycle.observations
    try:
        await states.put_policy_state(driver.app, text)
    except Exception as exc:
        logger.warning("app %s: cannot save its policy state: %s", driver.app, exc)
        return
    driver.mark_saved(observations)
