"""Secrets through the CLI, and a function that reads one."""

from __future__ import annotations

from tests.e2e.conftest import Cli

READER = "def handle(event, context):\n    return context.secret(event.query['name'])\n"


def secret_names(faasd: Cli) -> list[str]:
    lines = faasd.ok("secret", "list").splitlines()
    return [line.strip() for line in lines[2:] if line.strip()]  # after the header and rule


def test_secret_create_list_use_update_remove(faasd: Cli) -> None:
    (faasd.cwd / "key.bin").write_bytes(b"from-a-file\x00\xff")
    assert "Created secret e2e-literal" in faasd.ok(
        "secret", "create", "e2e-literal", "--from-literal", "s3cr3t"
    )
    faasd.ok("secret", "create", "e2e-file", "--from-file", "key.bin")
    faasd.ok("secret", "create", "e2e-stdin", input=b"piped")
    assert {"e2e-literal", "e2e-file", "e2e-stdin"} <= set(secret_names(faasd))

    again = faasd("secret", "create", "e2e-literal", "--from-literal", "x")
    assert again.returncode == 1 and "e2e-literal" in again.stderr

    faasd.ok("new", "reader")
    (faasd.cwd / "reader" / "handler.py").write_text(READER)
    faasd.ok("build")
    faasd.ok("deploy", "--name", "reader", "--image", "reader:latest", "--secret", "e2e-literal")
    assert faasd.ok("invoke", "reader", "-q", "name=e2e-literal") == "s3cr3t"
    faasd.ok("remove", "reader")

    assert "Updated secret" in faasd.ok("secret", "update", "e2e-stdin", "--from-literal", "new")
    for name in ("e2e-literal", "e2e-file", "e2e-stdin"):
        assert f"Removed secret {name}" in faasd.ok("secret", "remove", name)
    assert not {"e2e-literal", "e2e-file", "e2e-stdin"} & set(secret_names(faasd))

    missing = faasd("secret", "remove", "e2e-literal")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


def test_secret_create_takes_one_value(faasd: Cli) -> None:
    (faasd.cwd / "value.txt").write_text("v")
    both = faasd("secret", "create", "x", "--from-literal", "a", "--from-file", "value.txt")
    assert both.returncode == 2
    assert "either --from-literal or --from-file" in both.stderr
    nothing = faasd("secret", "create", "x")  # stdin is an empty pipe
    assert nothing.returncode == 2
    assert "--from-literal, --from-file or on stdin" in nothing.stderr
