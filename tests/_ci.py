"""Whether the tests run under CI, where a capability that is missing (sandboxes, the native
shim, redis-server, io_uring) fails the test instead of skipping it, so that CI proves the real
path. `CI` is set by every CI service, as "true", "1" or "yes" depending on the service; the
Makefile reads it the same way (its IN_CI)."""

from __future__ import annotations

import os

CI_VALUES = ("1", "true", "yes")


def in_ci() -> bool:
    """True when the CI environment variable says so, in any of the spellings services use."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES
