"""Loading a function's handler module from its package."""

from __future__ import annotations

import importlib.util
import inspect
import site
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[Any, Any], Any]


def load_handler(function_dir: Path, deps_dir: Path | None) -> tuple[Handler, bool]:
    """Import `handler.py` from the function's folder; returns (handle, is_coroutine_function).

    The function's folder goes first on sys.path so that its own modules import as siblings;
    its dependencies are added as a site dir so their .pth files are honoured.
    """
    sys.path.insert(0, str(function_dir))
    if deps_dir is not None and deps_dir.is_dir():
        site.addsitedir(str(deps_dir))
    spec = importlib.util.spec_from_file_location("handler", function_dir / "handler.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no handler.py in {function_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler"] = module
    spec.loader.exec_module(module)
    handle = getattr(module, "handle", None)
    if not callable(handle):
        raise ImportError("handler.py must define a function handle(event, context)")
    return handle, inspect.iscoroutinefunction(handle)
