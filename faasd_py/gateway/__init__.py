"""The gateway: an aiohttp app serving the OpenFaaS-compatible API."""

from __future__ import annotations

from faasd_py.gateway._app import make_app
from faasd_py.gateway._auth import Credentials, load_or_create_credentials
from faasd_py.gateway._backend import FunctionWorker

__all__ = ["Credentials", "FunctionWorker", "load_or_create_credentials", "make_app"]
