"""Typed keys for the state that the gateway's handlers share."""

from __future__ import annotations

from aiohttp import web

from faasd_py.config import Config
from faasd_py.gateway._backend import FunctionWorker
from faasd_py.gateway._metrics import GatewayMetrics
from faasd_py.store import Registry

CONFIG = web.AppKey("config", Config)
REGISTRY = web.AppKey("registry", Registry)
WORKER = web.AppKey("worker", FunctionWorker)
METRICS = web.AppKey("metrics", GatewayMetrics)
