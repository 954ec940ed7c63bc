"""What a user sees when something is wrong: one clear line on stderr and exit code 1."""

from __future__ import annotations

import subprocess

from tests.e2e.conftest import Cli, Platform, free_port


def assert_clean_failure(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    for text in expected:
        assert text in done.stderr
    assert "Traceback" not in done.stderr


def test_deploying_an_unbuilt_image_says_to_build(faasd: Cli) -> None:
    done = faasd("deploy", "--name", "ghost", "--image", "ghost:never-built")
    assert_clean_failure(done, "cannot deploy ghost", "faasd-py build")


def test_invoking_an_unknown_function_fails_clearly(faasd: Cli) -> None:
    done = faasd("invoke", "nobody-here")
    assert_clean_failure(done, "invoking nobody-here failed with HTTP 404", "not found")
    assert done.stdout == ""


def test_describing_an_unknown_function_fails_clearly(faasd: Cli) -> None:
    assert_clean_failure(faasd("describe", "nobody-here"), "not found")


def test_an_unreachable_gateway_is_named(faasd: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = faasd("list", "--gateway", url)
    assert_clean_failure(done, f"cannot reach the gateway at {url}: is `faasd-py up` running?")


def test_a_wrong_password_is_reported_as_such(faasd: Cli) -> None:
    done = faasd("list", "--password", "not-the-password")
    assert_clean_failure(done, "the gateway rejected the credentials", "--password")


def test_without_credentials_the_cli_says_where_it_looked(faasd: Cli, platform: Platform) -> None:
    elsewhere = faasd.cwd / "empty-data-dir"
    done = faasd("secret", "list", "--data-dir", elsewhere)
    assert_clean_failure(done, "the gateway needs credentials", str(elsewhere / "credentials"))
