"""The local package store: what `faasd-py build` makes and the worker runs.

A package is a built function, named by its stack.yml `image`:

    <root>/<quoted image>/function/      a copy of the handler's folder (handler.py, its modules)
    <root>/<quoted image>/deps/          its requirements, installed with `pip install --target`
    <root>/<quoted image>/package.json   metadata (image, lang, build time, requirements hash)

Installed requirements are cached by the sha256 of the requirements file under <root>/.deps/,
so a rebuild with unchanged requirements does not run pip; a package's deps/ holds hard links
into that cache (a copy where links are impossible), so the package stays a self-contained
folder that a sandbox can mount on its own. Builds are assembled in a temporary folder under
the root and renamed into place: a reader sees the old package or the new one, never half of one.

Modes (faasd_py.modes): the root, each package's folder and package.json are the owner's alone;
function/ and deps/ (and the cache that deps/ links into) are readable by all, since sandboxes
read them as "other", and reachable by no one else, below folders of 0700.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from faasd_py.errors import FaasdError, SpecError
from faasd_py.modes import private_dir, private_file, readable_tree
from faasd_py.spec import SUPPORTED_LANGS, StackFunction

__all__ = ["BuildFailed", "Package", "PackageStore", "normalize_image"]

METADATA = "package.json"
FUNCTION_DIR = "function"
DEPS_DIR = "deps"
# Folders under the root that are not packages start with a dot; a quoted image never does.
DEPS_CACHE = ".deps"
_TEMP_PREFIX = ".tmp-"
_IGNORED = shutil.ignore_patterns("__pycache__", ".git", "*.pyc")
# Lines of pip's output kept in a build error: enough for its explanation, not its whole log.
_PIP_TAIL_LINES = 20

# A container-image-like reference: path components of letters, digits, '.', '_', '-' (each
# starting with a letter or digit), an optional registry port, then an optional tag.
_COMPONENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_IMAGE = re.compile(rf"{_COMPONENT}(?::[0-9]+)?(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9._-]*)?")
_MAX_IMAGE = 255

Progress = Callable[[str], None]


class BuildFailed(FaasdError):
    """A package could not be built: pip failed, or the store could not be written."""


def _no_progress(_: str) -> None:
    pass


def normalize_image(image: str) -> str:
    """The image name packages are stored under: "hello" -> "hello:latest", tags are kept."""
    if not isinstance(image, str) or not image.strip():
        raise SpecError("image", "a package name is required, e.g. 'hello' or 'hello:0.1'")
    if len(image) > _MAX_IMAGE or ".." in image or not _IMAGE.fullmatch(image):
        raise SpecError(
            "image",
            f"{image[:80]!r} is not a valid package name: use letters, digits, '.', '_', '-' and "
            "'/' (no spaces, no '..'), with an optional ':tag', e.g. 'hello:0.1'",
        )
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last else f"{image}:latest"


def requirements_hash(requirements: Path) -> str | None:
    """sha256 of a requirements file, or None when it names nothing to install."""
    if not requirements.is_file():
        return None
    content = requirements.read_bytes()
    lines = (line.split(b"#", 1)[0].strip() for line in content.splitlines())
    if not any(lines):
        return None
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True)
class Package:
    image: str
    root: Path
    function_dir: Path
    deps_dir: Path
    built_at: float
    requirements_sha256: str | None

    @classmethod
    def at(cls, root: Path) -> Package | None:
        """The package in `root`, or None when the folder holds no complete package."""
        try:
            meta = json.loads((root / METADATA).read_text())
            image, built_at, sha = meta["image"], float(meta["built_at"]), meta["requirements"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not (root / FUNCTION_DIR / "handler.py").is_file():
            return None
        return cls(
            image=str(image),
            root=root,
            function_dir=root / FUNCTION_DIR,
            deps_dir=root / DEPS_DIR,
            built_at=built_at,
            requirements_sha256=None if sha is None else str(sha),
        )


class PackageStore:
    """Packages under one root folder (Config.packages_dir)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, image: str) -> Path:
        return self.root / quote(normalize_image(image), safe="")

    def get(self, image: str) -> Package | None:
        return Package.at(self.path_of(image))

    def list(self) -> builtins.list[Package]:
        if not self.root.is_dir():
            return []
        found = (Package.at(p) for p in sorted(self.root.iterdir()) if not p.name.startswith("."))
        return [p for p in found if p is not None]

    def remove(self, image: str) -> bool:
        path = self.path_of(image)
        if not path.is_dir():
            return False
        # Rename first so a concurrent reader never sees a half-deleted package.
        trash = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=self.root))
        path.rename(trash / "old")
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def build(
        self,
        fn: StackFunction,
        progress: Progress = _no_progress,
        python: str = sys.executable,
    ) -> Package:
        """Build `fn` into the package named by its image, replacing an older build."""
        image = normalize_image(fn.spec.image)
        where = f"functions.{fn.spec.service}"
        _check_source(fn, where)
        private_dir(self.root)
        staging = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=self.root))  # 0700
        try:
            progress(f"copying handler from {fn.handler}")
            _copy_handler(fn.handler, staging / FUNCTION_DIR)
            readable_tree(staging / FUNCTION_DIR)
            sha = requirements_hash(fn.handler / "requirements.txt")
            self._add_deps(staging / DEPS_DIR, fn.handler, sha, progress, python)
            _write_json(staging / METADATA, _metadata(fn, image, sha, python))
            progress("moving the package into place")
            target = self.path_of(image)
            _replace_dir(staging, target)
        except OSError as exc:
            raise BuildFailed(f"cannot build {image} into {self.root}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        package = Package.at(target)
        assert package is not None, "a package just renamed into place is complete"
        return package

    def _add_deps(
        self, dest: Path, handler: Path, sha: str | None, progress: Progress, python: str
    ) -> None:
        if sha is None:
            progress("no requirements to install")
            dest.mkdir(mode=0o755)
            return
        cached = self.root / DEPS_CACHE / sha
        if _cache_matches(cached, python):
            progress("installing requirements (cached)")
        else:
            progress("installing requirements with pip")
            self._fill_cache(cached, handler, python)
        _link_tree(cached / "site", dest)

    def _fill_cache(self, cached: Path, handler: Path, python: str) -> None:
        """pip-install the requirements into a fresh cache entry, then publish it by rename."""
        private_dir(cached.parent)
        work = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=cached.parent))
        try:
            _pip_install(python, handler, work / "site")
            readable_tree(work / "site")  # deps/ hard-links these very files
            _write_json(work / "interpreter.json", {"python": _interpreter_id(python)})
            shutil.rmtree(cached, ignore_errors=True)
            # Another build of the same requirements may publish first; either result is good.
            with contextlib.suppress(OSError):
                work.rename(cached)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _check_source(fn: StackFunction, where: str) -> None:
    if fn.lang not in SUPPORTED_LANGS:
        raise SpecError(
            f"{where}.lang", f"expected one of {', '.join(SUPPORTED_LANGS)}, got {fn.lang!r}"
        )
    if not fn.handler.is_dir():
        raise SpecError(f"{where}.handler", f"{fn.handler} is not a folder")
    if not (fn.handler / "handler.py").is_file():
        raise SpecError(
            f"{where}.handler",
            f"{fn.handler} has no handler.py (it must define handle(event, context))",
        )


def _copy_handler(source: Path, dest: Path) -> None:
    # Symlinks are followed: the package must not point outside itself once mounted alone.
    shutil.copytree(source, dest, ignore=_IGNORED, ignore_dangling_symlinks=True)


def _metadata(fn: StackFunction, image: str, sha: str | None, python: str) -> dict[str, Any]:
    return {
        "image": image,
        "service": fn.spec.service,
        "lang": fn.lang,
        "source": str(fn.handler),
        "built_at": time.time(),
        "requirements": sha,
        "python": _interpreter_id(python),
    }


def _pip_install(python: str, handler: Path, target: Path) -> None:
    # pip reads relative paths in a requirements file against its working folder, so run it in
    # the handler's folder: `./localpkg` then means the handler's own sibling folder.
    command = [
        python,
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "--target",
        str(target),
        "-r",
        "requirements.txt",
    ]
    try:
        done = subprocess.run(command, cwd=handler, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BuildFailed(f"cannot run pip with {python}: {exc.strerror}") from exc
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-_PIP_TAIL_LINES:]
        raise BuildFailed(
            f"pip could not install {handler / 'requirements.txt'} "
            f"(exit {done.returncode}):\n" + "\n".join(tail)
        )


def _interpreter_id(python: str) -> str:
    """Which interpreter deps were built for: a cache entry made for another is not reused."""
    return str(Path(python).resolve())


def _cache_matches(cached: Path, python: str) -> bool:
    try:
        stamp = json.loads((cached / "interpreter.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stamp, dict) and stamp.get("python") == _interpreter_id(python)


def _link_tree(source: Path, dest: Path) -> None:
    """Copy a folder tree as hard links (cheap, and the package stays self-contained)."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, symlinks=True, copy_function=link_or_copy)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    private_file(path).write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _replace_dir(new: Path, target: Path) -> None:
    """Move `new` to `target`, replacing whatever is there, without a moment of half a folder."""
    if not target.exists():
        new.rename(target)
        return
    # rename(2) cannot replace a non-empty folder: move the old one aside first, then drop it.
    aside = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=target.parent)) / "old"
    target.rename(aside)
    try:
        new.rename(target)
    except OSError:
        aside.rename(target)
        raise
    finally:
        shutil.rmtree(aside.parent, ignore_errors=True)
