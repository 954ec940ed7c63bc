"""The package store: real builds into a temporary folder, with a real pip on local packages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from faasd_py.errors import SpecError
from faasd_py.packages import BuildFailed, PackageStore, normalize_image
from faasd_py.spec import FunctionSpec, StackFunction

HANDLER = 'def handle(event, context):\n    return {"statusCode": 200, "body": "hi"}\n'


def make_function(
    tmp_path: Path,
    image: str = "hello",
    requirements: str | None = None,
    lang: str = "python3-http",
) -> StackFunction:
    handler = tmp_path / "src" / "hello"
    handler.mkdir(parents=True, exist_ok=True)
    (handler / "handler.py").write_text(HANDLER)
    if requirements is not None:
        (handler / "requirements.txt").write_text(requirements)
    return StackFunction(
        spec=FunctionSpec(service="hello", image=image), lang=lang, handler=handler
    )


def make_local_distribution(where: Path, module: str = "tinypkg", value: int = 42) -> None:
    """A tiny installable project in `where`, so pip can install it without a network."""
    (where / module).mkdir(parents=True)
    (where / module / "__init__.py").write_text(f"VALUE = {value}\n")
    (where / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{module}"\nversion = "0.1"\n'
    )


def temp_leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp-"))


@pytest.fixture
def store(tmp_path: Path) -> PackageStore:
    return PackageStore(tmp_path / "packages")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("hello", "hello:latest"),
        ("hello:0.1", "hello:0.1"),
        ("ghcr.io/me/hello", "ghcr.io/me/hello:latest"),
        ("localhost:5000/hello", "localhost:5000/hello:latest"),
        ("localhost:5000/hello:v2", "localhost:5000/hello:v2"),
    ],
)
def test_normalize_image_adds_latest_only_without_a_tag(given: str, expected: str) -> None:
    assert normalize_image(given) == expected


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "hello world", "../etc", "a/../b", "hello:", "/abs", "a//b", ".hidden", "x\n"],
)
def test_normalize_image_rejects_bad_names(bad: str) -> None:
    with pytest.raises(SpecError) as info:
        normalize_image(bad)
    assert info.value.field == "image"


def test_build_copies_the_handler_and_records_metadata(tmp_path: Path, store: PackageStore) -> None:
    fn = make_function(tmp_path)
    (fn.handler / "helper.py").write_text("X = 1\n")
    (fn.handler / "__pycache__").mkdir()
    (fn.handler / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"junk")
    (fn.handler / ".git").mkdir()
    steps: list[str] = []

    package = store.build(fn, progress=steps.append)

    assert package.image == "hello:latest"
    assert package.root.parent == store.root
    assert (package.function_dir / "handler.py").read_text() == HANDLER
    assert (package.function_dir / "helper.py").is_file()
    assert not (package.function_dir / "__pycache__").exists()
    assert not (package.function_dir / ".git").exists()
    assert package.deps_dir.is_dir() and not any(package.deps_dir.iterdir())
    assert package.requirements_sha256 is None
    assert any("copying handler" in s for s in steps)
    assert store.get("hello") == package
    assert store.get("hello:latest") == package
    assert store.list() == [package]
    assert temp_leftovers(store.root) == []


def test_unbuilt_image_is_none(store: PackageStore) -> None:
    assert store.get("nothing") is None
    assert store.list() == []


def test_comment_only_requirements_do_not_run_pip(tmp_path: Path, store: PackageStore) -> None:
    # A python that does not exist: running pip would fail the build.
    fn = make_function(tmp_path, requirements="# nothing yet\n\n")
    package = store.build(fn, python=str(tmp_path / "no-python"))
    assert package.requirements_sha256 is None


def test_requirements_install_once_then_come_from_the_cache(
    tmp_path: Path, store: PackageStore
) -> None:
    fn = make_function(tmp_path, requirements="./localpkg\n")
    make_local_distribution(fn.handler / "localpkg")
    first_steps: list[str] = []
    first = store.build(fn, progress=first_steps.append)
    assert "installing requirements with pip" in first_steps
    assert first.requirements_sha256 is not None
    assert import_value(first.deps_dir) == "42"

    # Without the local project pip could not install it again: the build must use the cache.
    for path in sorted((fn.handler / "localpkg").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (fn.handler / "localpkg").rmdir()
    second_steps: list[str] = []
    second = store.build(fn, progress=second_steps.append)

    assert "installing requirements (cached)" in second_steps
    assert "installing requirements with pip" not in second_steps
    assert second.requirements_sha256 == first.requirements_sha256
    assert import_value(second.deps_dir) == "42"


def import_value(deps_dir: Path) -> str:
    """Import the installed module in a fresh interpreter, as a sandbox would."""
    env = {**os.environ, "PYTHONPATH": str(deps_dir)}
    done = subprocess.run(
        [sys.executable, "-c", "import tinypkg; print(tinypkg.VALUE)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_pip_failure_is_a_clear_build_error(tmp_path: Path, store: PackageStore) -> None:
    fn = make_function(tmp_path, requirements="./missing-project\n")

    with pytest.raises(BuildFailed) as info:
        store.build(fn)

    message = info.value.message
    assert "pip could not install" in message
    assert "missing-project" in message  # pip's own explanation is carried along
    assert store.get("hello") is None
    assert temp_leftovers(store.root) == []
    assert temp_leftovers(store.root / ".deps") == []


def test_rebuild_replaces_the_old_package(tmp_path: Path, store: PackageStore) -> None:
    fn = make_function(tmp_path)
    (fn.handler / "old.py").write_text("")
    first = store.build(fn)
    (fn.handler / "old.py").unlink()
    (fn.handler / "handler.py").write_text(HANDLER.replace("hi", "bye"))

    second = store.build(fn)

    assert second.root == first.root
    assert "bye" in (second.function_dir / "handler.py").read_text()
    assert not (second.function_dir / "old.py").exists()
    assert second.built_at >= first.built_at
    assert store.list() == [second]
    assert temp_leftovers(store.root) == []


def test_missing_handler_py_names_the_field(tmp_path: Path, store: PackageStore) -> None:
    fn = make_function(tmp_path)
    (fn.handler / "handler.py").unlink()
    with pytest.raises(SpecError, match=r"no handler\.py") as info:
        store.build(fn)
    assert info.value.field == "functions.hello.handler"


def test_missing_handler_folder_names_the_field(tmp_path: Path, store: PackageStore) -> None:
    fn = StackFunction(
        spec=FunctionSpec(service="hello", image="hello"),
        lang="python3-http",
        handler=tmp_path / "nowhere",
    )
    with pytest.raises(SpecError, match="is not a folder") as info:
        store.build(fn)
    assert info.value.field == "functions.hello.handler"


def test_unsupported_lang_names_the_field(tmp_path: Path, store: PackageStore) -> None:
    fn = make_function(tmp_path, lang="node18")
    with pytest.raises(SpecError) as info:
        store.build(fn)
    assert info.value.field == "functions.hello.lang"


def test_bad_image_is_rejected_before_anything_is_written(
    tmp_path: Path, store: PackageStore
) -> None:
    fn = make_function(tmp_path, image="../../escape")
    with pytest.raises(SpecError) as info:
        store.build(fn)
    assert info.value.field == "image"
    assert not store.root.exists()


def test_remove(tmp_path: Path, store: PackageStore) -> None:
    store.build(make_function(tmp_path, image="hello:1"))
    assert store.remove("hello:1") is True
    assert store.get("hello:1") is None
    assert store.remove("hello:1") is False
    assert temp_leftovers(store.root) == []


def test_requirements_that_install_nothing_still_build(tmp_path: Path, store: PackageStore) -> None:
    # Options only: pip runs (offline, no index) and installs nothing; the package is still whole.
    fn = make_function(tmp_path, requirements="--no-index\n")
    package = store.build(fn)
    assert package.requirements_sha256 is not None
    assert package.deps_dir.is_dir() and not any(package.deps_dir.iterdir())
