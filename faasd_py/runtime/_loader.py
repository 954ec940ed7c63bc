"""Loading a function's handler: the folder as the package `function`, its dependencies ahead of
the runtime's own.

As OpenFaaS's python3-http template does (its index.py runs `from function import handler`),
the function's folder is the package `function` and the handler is `function.handler`, so that
relative imports (`from .helper import greet`) and `from function import helper` work. Its
modules also import as top-level siblings (`import helper`, as faasd-py functions have always
written it): the finder `_Siblings` gives `helper` the very module `function.helper`, one object
under two names, so its state is not doubled and its own relative imports work either way.

The runtime's own packages must not be the function's (what the template's container gives it:
its own requirements, whatever versions they pin). The runtime imports msgpack (and, with the
native shim, cffi's `_cffi_backend`) before any function code, from its folder, which the
worker puts first on the path. `isolate_runtime` takes those modules out of `sys.modules`
(the runtime's modules keep their references, so the runtime goes on with its own copy, C
extension included) and moves the runtime's folder behind the function's dependencies: the
function's `import msgpack` then finds its own, and only a function without one gets a fresh
import of the runtime's files. Whatever of the runtime needs msgpack must be imported before
this (the channel modules are; the zygote imports the shm channel first).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import site
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import faasd_py

Handler = Callable[[Any, Any], Any]

PACKAGE = "function"
# Top-level modules the runtime imports from its folder besides faasd_py (see _link_runtime in
# faasd_py.worker._worker): a function may bring its own versions of any of them.
RUNTIME_MODULES = ("msgpack", "_cffi_backend")


def load_handler(function_dir: Path, deps_dir: Path | None) -> tuple[Handler, bool]:
    """Import `handler.py` from the function's folder as `function.handler`; returns
    (handle, is_coroutine_function). Its dependencies are added as a site dir, so their .pth
    files are honoured, ahead of the runtime's folder."""
    if not (function_dir / "handler.py").is_file():
        raise ImportError(f"no handler.py in {function_dir}")
    isolate_runtime()
    runtime_entries = _runtime_path_entries()
    for entry in runtime_entries:
        sys.path.remove(entry)
    if deps_dir is not None and deps_dir.is_dir():
        site.addsitedir(str(deps_dir))
    sys.path.extend(runtime_entries)
    _install_package(function_dir)
    module = importlib.import_module(f"{PACKAGE}.handler")
    handle = getattr(module, "handle", None)
    if not callable(handle):
        raise ImportError("handler.py must define a function handle(event, context)")
    return handle, inspect.iscoroutinefunction(handle)


def isolate_runtime() -> None:
    """Forget the runtime's own copies of RUNTIME_MODULES, so that the function imports its."""
    for name in list(sys.modules):
        if name.partition(".")[0] in RUNTIME_MODULES:
            del sys.modules[name]


def _runtime_path_entries() -> list[str]:
    """The sys.path entries that hold this runtime's faasd_py (the worker's runtime folder)."""
    root = Path(faasd_py.__file__ or ".").parent.parent
    return [entry for entry in sys.path if entry and Path(entry) == root]


def _install_package(function_dir: Path) -> ModuleType:
    """The package `function` over the folder (running its __init__.py, if any), and the
    finder that lets its modules import as top-level siblings too."""
    init = function_dir / "__init__.py"
    locations = [str(function_dir)]
    if init.is_file():
        spec = importlib.util.spec_from_file_location(
            PACKAGE, init, submodule_search_locations=locations
        )
    else:
        spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
        spec.submodule_search_locations = locations
    assert spec is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    if spec.loader is not None:
        try:
            spec.loader.exec_module(package)
        except BaseException:
            del sys.modules[PACKAGE]
            raise
    # Where the folder used to be first on sys.path: a sibling module or package shadows an
    # installed one of the same name, but not a built-in one; a sibling folder without
    # __init__.py is a namespace package only when no module of its name is installed (a
    # local dependency's source folder must not hide the dependency).
    finders = sys.meta_path
    at = next(
        (i for i, f in enumerate(finders) if f is importlib.machinery.PathFinder), len(finders)
    )
    finders.insert(at, _Siblings(function_dir, namespaces=False))
    finders.append(_Siblings(function_dir, namespaces=True))
    return package


class _Siblings(importlib.abc.MetaPathFinder):
    """`import helper` (and `import utils.text`) for the folder's own modules: the module
    `function.helper` under the name `helper`. One finder for modules and packages, one (last
    of all finders) for namespace packages."""

    def __init__(self, function_dir: Path, *, namespaces: bool) -> None:
        self._dir = str(function_dir)
        self._namespaces = namespaces

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        top = fullname.partition(".")[0]
        if top == PACKAGE:
            return None
        if top == fullname:
            spec = importlib.machinery.PathFinder.find_spec(fullname, [self._dir])
            if spec is None or (spec.origin is None) != self._namespaces:
                return None
        elif self._namespaces or sys.modules.get(top) is not sys.modules.get(
            f"{PACKAGE}.{top}", False
        ):
            return None  # a submodule of a package that is not one of the folder's
        return importlib.util.spec_from_loader(fullname, _Alias(f"{PACKAGE}.{fullname}"))


class _Alias(importlib.abc.Loader):
    """Loads a module by importing it under its name in the package `function`."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self._target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # Between the two calls the import system gave the module the alias's spec; its own
        # is the truth (its name, its parent for relative imports, a reload).
        module.__spec__ = self._spec
