"""faasd-py: a self-hosted, OpenFaaS-compatible Function-as-a-Service runtime."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
