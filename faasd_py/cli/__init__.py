"""The `faasd-py` command: run the platform, scaffold, build and deploy functions, call them.

Commands only parse and wire: `up` builds a Config and hands it to the server; `new` and `build`
work on local files and the package store; the rest talk to a gateway over its
OpenFaaS-compatible HTTP API through `Gateway.send`, the one place that makes requests and
turns HTTP failures into FaasdErrors. Every FaasdError reaches the user as one line on stderr
and exit code 1 (click usage errors keep exit code 2); a traceback means a bug.

Settings shared by commands read FAASD_<OPTION> (FAASD_GATEWAY, FAASD_DATA_DIR, FAASD_PORT...);
options of a single command read FAASD_<COMMAND>_<OPTION> (click's auto_envvar_prefix).
"""

from __future__ import annotations

# Importing the command modules registers their commands on the group.
from faasd_py.cli import (  # noqa: F401
    _bench,
    _cluster,
    _functions,
    _local,
    _namespaces,
    _queue,
    _secrets,
    _simulate,
)
from faasd_py.cli._app import cli, main

__all__ = ["cli", "main"]
