"""Namespaces through the CLI: `faasd-py namespace ...` and --namespace on the other commands."""

from __future__ import annotations

from tests.e2e.conftest import Cli

WHERE = "def handle(event, context):\n    return context.secret('where')\n"


def test_a_function_and_its_secret_in_a_namespace_of_their_own(faasd: Cli) -> None:
    assert "Created namespace e2e-dev" in faasd.ok(
        "namespace", "create", "e2e-dev", "--label", "team=web"
    )
    assert "e2e-dev" in faasd.ok("namespace", "list")
    assert '"team": "web"' in faasd.ok("namespace", "get", "e2e-dev")
    faasd.ok("secret", "create", "where", "--from-literal", "in dev", "--namespace", "e2e-dev")
    faasd.ok("secret", "create", "where", "--from-literal", "in default")

    faasd.ok("new", "whereami")
    (faasd.cwd / "whereami" / "handler.py").write_text(WHERE)
    faasd.ok("build")
    for namespace in ("e2e-dev", "openfaas-fn"):
        faasd.ok(
            "deploy", "--name", "whereami", "--image", "whereami:latest",
            "--secret", "where", "--namespace", namespace,
        )  # fmt: skip
    assert faasd.ok("invoke", "whereami", "--namespace", "e2e-dev") == "in dev"
    assert faasd.ok("invoke", "whereami") == "in default"
    listed = faasd.ok("list", "--namespace", "e2e-dev")
    assert "whereami" in listed
    assert "e2e-dev" in faasd.ok("describe", "whereami", "--namespace", "e2e-dev")

    busy = faasd("namespace", "remove", "e2e-dev")
    assert busy.returncode == 1 and "whereami" in busy.stderr and "Traceback" not in busy.stderr
    faasd.ok("remove", "whereami", "--namespace", "e2e-dev")
    faasd.ok("remove", "whereami")
    faasd.ok("secret", "remove", "where")
    assert "Removed namespace e2e-dev" in faasd.ok("namespace", "remove", "e2e-dev")
    assert "e2e-dev" not in faasd.ok("namespace", "list")

    unknown = faasd("invoke", "whereami", "--namespace", "e2e-gone")
    assert unknown.returncode == 1 and "namespace 'e2e-gone' not found" in unknown.stderr
    malformed = faasd("list", "--namespace", "Not_Valid")
    assert malformed.returncode == 2 and "not a valid namespace" in malformed.stderr
