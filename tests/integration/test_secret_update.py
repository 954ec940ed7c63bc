"""`faas-cli secret update` (PUT /system/secrets) reaches running functions: their instances
read the new value from the same file, with no restart and no failed call, and so do the
instances their zygote forks afterwards (from a spare forked before the update).

Under both isolations, with test_zygote's fixtures: `sandbox` (skipped where sandboxes cannot
run, but a failure under CI=true), where an instance reads /var/openfaas/secrets (a bind mount
of its function's secrets folder), and `process`, where it reads the folder at its host path
(FAASD_SECRETS_DIR).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

from faasd_py.isolation.sandbox import SANDBOX_UID, SECRETS_PATH
from faasd_py.spec import FunctionSpec
from tests.integration import test_zygote
from tests.integration._poll import until
from tests.integration.conftest import Platform

platform = test_zygote.platform
_sandboxes_where_asked = test_zygote._sandboxes_where_asked
_until = until

# Reads the secret's file at every call (as OpenFaaS's docs tell functions to), and says which
# process answered: a restart would show as a new pid.
READER = """
import os

def handle(event, context):
    directory = os.environ["FAASD_SECRETS_DIR"]
    with open(os.path.join(directory, "api-key")) as f:
        value = f.read()
    return {"body": {"pid": os.getpid(), "dir": directory, "file": value,
                     "context": context.secret("api-key"), "instance": context.hostname}}
"""

_DEADLINE = 10.0  # only to catch a hang (with _until's own 10 s)


async def _call(platform: Platform, name: str) -> dict[str, Any]:
    status, data, _ = await platform.invoke(name)
    assert status == 200, data
    result: dict[str, Any] = json.loads(data)
    return result


async def _put_secret(platform: Platform, method: str, value: str) -> None:
    status, reply = await platform.system(
        method, "/system/secrets", {"name": "api-key", "value": value}
    )
    assert status in (200, 201), reply


async def test_an_updated_secret_reaches_the_running_instance_without_a_restart(
    platform: Platform,
) -> None:
    await _put_secret(platform, "POST", "old")
    # Room for the concurrent calls below in one instance: no second one starts.
    await platform.deploy("reader", READER, secrets=("api-key",), env={"max_inflight": "4"})
    first = await _call(platform, "reader")
    assert first["file"] == first["context"] == "old"
    if platform.worker.isolation == "sandbox":
        assert first["dir"] == SECRETS_PATH

    # Calls run all along the update: none may fail, and each sees a whole value.
    seen: list[dict[str, Any]] = []
    calling, updated = asyncio.Event(), asyncio.Event()

    async def keep_calling() -> None:
        while not updated.is_set():
            seen.append(await _call(platform, "reader"))
            calling.set()

    callers = [asyncio.create_task(keep_calling()) for _ in range(2)]
    async with asyncio.timeout(_DEADLINE):
        await calling.wait()
    await _put_secret(platform, "PUT", "new")
    # The PUT answers once the file is replaced: the very next call reads the new value.
    after = await _call(platform, "reader")
    updated.set()
    async with asyncio.timeout(_DEADLINE):
        await asyncio.gather(*callers)
    assert after["file"] == after["context"] == "new"
    assert {r["file"] for r in seen} <= {"old", "new"}
    assert {r["pid"] for r in [first, *seen, after]} == {first["pid"]}  # never restarted
    assert platform.worker.statistics("reader").available == 1  # type: ignore[union-attr]

    # A cold start after the update (a fork of the zygote, whose spare was forked before it,
    # or, sandboxed with the app unloaded, of the base zygote) reads the new value too.
    platform.worker.scale("reader", 0)
    await _until(lambda: getattr(platform.worker.statistics("reader"), "available", 1) == 0)
    cold = await _call(platform, "reader")
    assert cold["instance"] != first["instance"]  # (pids: each sandbox's own pid 1, maybe)
    assert cold["file"] == cold["context"] == "new"
    stats = platform.worker.launcher_statistics("reader")
    assert stats.forks + stats.execs >= 2


async def test_a_secret_update_reaches_only_the_functions_that_name_it(
    platform: Platform,
) -> None:
    await _put_secret(platform, "POST", "old")
    await platform.deploy("reader", READER, secrets=("api-key",))
    await platform.deploy("bystander", READER)
    assert (await _call(platform, "reader"))["file"] == "old"
    status, data, _ = await platform.invoke("bystander")
    assert status == 500 and b"api-key" in data, data

    await _put_secret(platform, "PUT", "new")
    assert (await _call(platform, "reader"))["file"] == "new"
    status, data, _ = await platform.invoke("bystander")
    assert status == 500 and b"api-key" in data, data  # still no such file


async def test_a_secret_update_stays_in_its_namespace(platform: Platform) -> None:
    status, reply = await platform.system("POST", "/system/namespace/", {"name": "dev"})
    assert status in (200, 201, 202), reply
    await _put_secret(platform, "POST", "old")
    dev_secret = {"name": "api-key", "value": "dev-old", "namespace": "dev"}
    assert (await platform.system("POST", "/system/secrets", dev_secret))[0] == 201
    await platform.deploy("reader", READER, secrets=("api-key",))
    dev = FunctionSpec(
        service="reader", image="reader:latest", namespace="dev", secrets=("api-key",)
    )
    status, reply = await platform.system("POST", "/system/functions", dev.to_json())
    assert status == 202, reply

    dev_secret["value"] = "dev-new"
    assert (await platform.system("PUT", "/system/secrets", dev_secret))[0] == 200
    assert (await _call(platform, "reader.dev"))["file"] == "dev-new"
    assert (await _call(platform, "reader"))["file"] == "old"  # the other namespace's secret


async def test_a_function_s_secrets_folder_is_private_and_goes_with_the_function(
    platform: Platform,
) -> None:
    await _put_secret(platform, "POST", "old")
    await platform.deploy("reader", READER, secrets=("api-key",))
    await _call(platform, "reader")
    await _put_secret(platform, "PUT", "new")
    (folder,) = (platform.config.run_dir / "secrets").iterdir()
    # Only the secret: no temporary file left by the update, readable by its owner only.
    assert [p.name for p in folder.iterdir()] == ["api-key"]
    owner = SANDBOX_UID if platform.worker.isolation == "sandbox" else os.geteuid()
    info = (folder / "api-key").stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (owner, 0o400)
    assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0

    assert (await platform.system("DELETE", "/system/functions", {"functionName": "reader"}))[
        0
    ] in (200, 202)
    await _until(lambda: not folder.exists())
    assert _listing(platform.config.run_dir / "secrets") == []


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []
