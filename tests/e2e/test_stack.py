"""A stack folder as faasd-py leaves it, used by faas-cli's deploy, and the one package store
that `build` and `up` share."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faasd_py.cli._templates import FPROCESS
from faasd_py.spec import parse_yaml
from tests.e2e.conftest import (
    FAASD_PY,
    Cli,
    Platform,
    clean_environment,
    free_port,
    terminate,
    wait_healthy,
)

VERSIONED_HANDLER = (
    "import os\n\n"
    "def handle(event, context):\n"
    '    return {"version": os.environ["VERSION"], "fprocess": os.environ.get("fprocess")}\n'
)


def faas_cli_deploy(folder: Path, gateway: str, auth: tuple[str, str]) -> dict[str, int]:
    """What `faas-cli deploy -f stack.yml` (0.18.12, run in `folder`) does with each function:
    fprocess from ./template/LANG/template.yml when the stack sets none (it stops when the file
    is missing), then PUT /system/functions and POST when that says 404. Its YAML keeps each
    scalar's text in string fields, as parse_yaml does."""
    stack = parse_yaml((folder / "stack.yml").read_text(), "stack.yml")
    statuses = {}
    for name, fn in stack["functions"].items():
        fprocess = fn.get("fprocess") or ""
        if not fprocess:
            template = folder / "template" / fn["lang"] / "template.yml"
            if not template.is_file():
                raise AssertionError(f"stat ./template/{fn['lang']}/template.yml: no such file")
            fprocess = parse_yaml(template.read_text(), str(template)).get("fprocess") or ""
        body = {
            "service": name,
            "image": fn["image"],
            "envProcess": fprocess,
            "envVars": fn.get("environment") or {},
            "labels": fn.get("labels") or {},
            "annotations": fn.get("annotations") or {},
            "secrets": fn.get("secrets") or [],
            "namespace": fn.get("namespace") or "",
            "readOnlyRootFilesystem": False,
        }
        status = _send(gateway, "PUT", body, auth)
        statuses[name] = _send(gateway, "POST", body, auth) if status == 404 else status
    return statuses


def _send(gateway: str, method: str, body: dict[str, Any], auth: tuple[str, str]) -> int:
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(
        f"{gateway}/system/functions",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def credentials(data_dir: Path) -> tuple[str, str]:
    folder = data_dir / "credentials"
    return (
        (folder / "basic-auth-user").read_text().strip(),
        (folder / "basic-auth-password").read_text().strip(),
    )


def test_faas_cli_deploys_what_new_and_build_leave(faasd: Cli, platform: Platform) -> None:
    faasd.ok("new", "viacli")
    handler = faasd.cwd / "viacli" / "handler.py"
    handler.write_text(VERSIONED_HANDLER)
    stack = faasd.cwd / "stack.yml"
    stack.write_text(stack.read_text() + "    environment:\n      VERSION: 1.10\n")
    faasd.ok("build", "-f", "stack.yml")

    statuses = faas_cli_deploy(faasd.cwd, platform.url, credentials(platform.data_dir))

    assert statuses == {"viacli": 202}
    assert json.loads(faasd.ok("invoke", "viacli")) == {"version": "1.10", "fprocess": FPROCESS}
    assert json.loads(faasd.ok("describe", "viacli", "--json"))["envProcess"] == FPROCESS
    faasd.ok("remove", "viacli")


def test_build_restores_the_template_folder_faas_cli_needs(faasd: Cli, platform: Platform) -> None:
    faasd.ok("new", "restored")
    template = faasd.cwd / "template" / "python3-http" / "template.yml"
    template.unlink()
    with pytest.raises(AssertionError, match=r"template\.yml: no such file"):
        faas_cli_deploy(faasd.cwd, platform.url, credentials(platform.data_dir))

    built = faasd.ok("build")

    assert f"Created {template.relative_to(faasd.cwd)}" in built
    statuses = faas_cli_deploy(faasd.cwd, platform.url, credentials(platform.data_dir))
    assert statuses == {"restored": 202}
    assert faasd.ok("invoke", "restored", input=b"Ada") == "Hello, Ada!\n"
    faasd.ok("remove", "restored")


def test_deploying_an_image_built_into_another_store_names_the_gateways(
    faasd: Cli, platform: Platform
) -> None:
    faasd.ok("new", "elsewhere")
    other = faasd.cwd / "other-data"
    built = faasd("build", env={"FAASD_DATA_DIR": str(other)})
    assert built.returncode == 0, built.stderr

    done = faasd("deploy")

    assert done.returncode == 1
    assert str(platform.data_dir / "packages") in done.stderr
    assert f"--data-dir {platform.data_dir}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def up_with_env_data_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A second `faasd-py up`, told its data dir by FAASD_DATA_DIR alone (no --data-dir)."""
    data_dir, log = tmp_path / "env-data", tmp_path / "env-up.log"
    port = free_port()
    env = {**clean_environment(), "FAASD_DATA_DIR": str(data_dir)}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [FAASD_PY, "up", "--port", str(port)], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, log)
        yield url, data_dir
    finally:
        terminate(process)


def test_build_and_up_share_the_store_named_by_faasd_data_dir(
    up_with_env_data_dir: tuple[str, Path], tmp_path: Path
) -> None:
    url, data_dir = up_with_env_data_dir
    home = tmp_path / "home"  # so that a default data dir would differ from FAASD_DATA_DIR
    env = {**clean_environment(), "HOME": str(home), "XDG_DATA_HOME": str(home / "share")}
    cli = Cli(cwd=tmp_path, env={**env, "FAASD_DATA_DIR": str(data_dir), "FAASD_GATEWAY": url})
    cli.ok("new", "shared")

    built = cli.ok("build")

    assert str(data_dir / "packages") in built
    assert "Deployed shared" in cli.ok("deploy")
    assert cli.ok("invoke", "shared", input=b"Bo") == "Hello, Bo!\n"
    assert not (home / "share" / "faasd-py").exists()
    assert os.listdir(data_dir / "packages")
