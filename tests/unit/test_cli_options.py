"""The command's parsing: option values, environment variables, credentials, output formats."""

from __future__ import annotations

import base64
import json
import socket
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from faasd_py.cli import cli
from faasd_py.cli._client import GatewayOptions, Reply
from faasd_py.cli._functions import describe_lines, format_log_line
from faasd_py.cli._options import parse_pairs, since_to_rfc3339

NOW = datetime(2026, 1, 2, 15, 4, 5, tzinfo=UTC).timestamp()


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += all_commands(command, (*prefix, name))
    return found


@pytest.mark.parametrize("command", all_commands(cli), ids=" ".join)
def test_every_command_has_help_with_an_example(command: tuple[str, ...]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output


def test_pairs_keep_order_and_repeats_and_split_at_the_first_equals() -> None:
    assert parse_pairs(["a=1", "b=x=y", "a=2", "empty="], "--env") == [
        ("a", "1"),
        ("b", "x=y"),
        ("a", "2"),
        ("empty", ""),
    ]


@pytest.mark.parametrize("bad", ["novalue", "=v", " =v"])
def test_pairs_without_a_key_are_rejected(bad: str) -> None:
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        parse_pairs([bad], "--env")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("5m", "2026-01-02T14:59:05Z"),
        ("1h30m", "2026-01-02T13:34:05Z"),
        ("0s", "2026-01-02T15:04:05Z"),
        ("2025-12-31T23:00:00Z", "2025-12-31T23:00:00Z"),
        ("2025-12-31T23:00:00+02:00", "2025-12-31T21:00:00Z"),
        ("2025-12-31T23:00:00", "2025-12-31T23:00:00Z"),
    ],
)
def test_since_is_sent_as_rfc3339_utc(given: str, expected: str) -> None:
    assert since_to_rfc3339(given, NOW) == expected


def test_since_rejects_other_text_with_the_accepted_forms() -> None:
    with pytest.raises(click.BadParameter, match=r"5m.*RFC3339"):
        since_to_rfc3339("yesterday", NOW)


@pytest.mark.parametrize(
    ("option", "value", "shown"),
    [
        ("--max-body", "12X", "Ki, Mi, Gi"),
        ("--scale-down-after", "soon", "30s"),
        ("--start-timeout", "-1", "negative"),
        ("--max-queue", "0", "0"),
        ("--port", "70000", "70000"),
    ],
)
def test_up_rejects_bad_values_before_starting(option: str, value: str, shown: str) -> None:
    result = run("up", option, value)
    assert result.exit_code == 2
    assert option in result.stderr and shown in result.stderr


def test_up_reads_faasd_environment_variables() -> None:
    result = run("up", env={"FAASD_MAX_BODY": "lots"})
    assert result.exit_code == 2
    assert "FAASD_MAX_BODY" in result.stderr


def test_unreachable_gateway_from_the_environment_is_named(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = run("list", "--data-dir", tmp_path, env={"FAASD_GATEWAY": url})
    assert result.exit_code == 1
    assert f"cannot reach the gateway at {url}: is `faasd-py up` running?" in result.stderr
    assert "Traceback" not in result.output


def test_credentials_come_from_the_data_dir(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "basic-auth-user").write_text("admin\n")
    (credentials / "basic-auth-password").write_text("s3cret\n")

    from_files = GatewayOptions(None, None, None, tmp_path, 5.0).client()
    from_flags = GatewayOptions(None, "bob", "pw", tmp_path, 5.0).client()
    nothing = GatewayOptions(None, None, None, tmp_path / "elsewhere", 5.0).client()

    assert from_files.authorization == "Basic " + base64.b64encode(b"admin:s3cret").decode()
    assert from_flags.authorization == "Basic " + base64.b64encode(b"bob:pw").decode()
    assert nothing.authorization is None


def test_gateway_url_prefers_the_option_then_the_stack_then_the_default(tmp_path: Path) -> None:
    stack_url = "http://10.0.0.1:8080"
    assert GatewayOptions("http://a:1", None, None, tmp_path, 1).client(stack_url).url == (
        "http://a:1"
    )
    assert GatewayOptions(None, None, None, tmp_path, 1).client(stack_url).url == stack_url
    assert GatewayOptions(None, None, None, tmp_path, 1).client().url == "http://127.0.0.1:8080"


def reply(status: int, body: bytes) -> Reply:
    return Reply(status, Message(), body)


def test_error_text_prefers_the_gateways_json_message() -> None:
    assert reply(400, b'{"error": "bad spec", "status": 400}').error_text() == "bad spec"
    assert reply(502, b"upstream broke\n").error_text() == "upstream broke"
    assert reply(500, b"").error_text() == "HTTP 500"


def test_log_lines_read_timestamp_instance_text() -> None:
    record = {"name": "f", "instance": "f-1", "timestamp": "2026-01-02T15:04:05Z", "text": "hi\n"}
    assert format_log_line(json.dumps(record).encode()) == "2026-01-02T15:04:05Z f-1 hi"
    assert format_log_line(b"not json\n") == "not json"


def test_describe_shows_known_fields_readably_then_unknown_ones() -> None:
    lines = describe_lines(
        {
            "zzz": 1,
            "name": "hello",
            "envVars": {"a": "1", "b": "2"},
            "secrets": [],
            "readOnlyRootFilesystem": False,
        }
    )
    assert [line.split(":")[0] for line in lines] == [
        "Name",
        "Environment",
        "Secrets",
        "Read-only root",
        "zzz",
    ]
    assert lines[1].endswith("a=1, b=2")
    assert lines[2].endswith("-")
    assert lines[3].endswith("no")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "x"], "--name and --image go together"),
        (["--name", "x", "--image", "x", "-f", "stack.yml"], "either a stack file"),
        (["--env", "a=b"], "go with --name and --image"),
        (["--name", "x", "--image", "x", "--env", "novalue"], "KEY=VALUE"),
    ],
)
def test_deploy_rejects_mixed_or_malformed_flags(args: list[str], message: str) -> None:
    # Usage errors are found before any request: no gateway is needed.
    result = run("deploy", *args, "--gateway", f"http://127.0.0.1:{closed_port()}")
    assert result.exit_code == 2
    assert message in result.stderr


def test_up_checks_the_net_bridge_and_subnet_before_starting(tmp_path: Path) -> None:
    result = run("up", "--data-dir", str(tmp_path), "--net-subnet", "10.0.0.0/33")
    assert (
        result.exit_code == 2
        and "--net-subnet '10.0.0.0/33' is not an IPv4 subnet" in result.output
    )
    result = run("up", "--data-dir", str(tmp_path), "--net-bridge", "a-name-past-15-chars")
    assert result.exit_code == 2 and "is not a valid interface name" in result.output
    result = run("up", "--data-dir", str(tmp_path), env={"FAASD_NET_SUBNET": "10.0.0.0/31"})
    assert result.exit_code == 2 and "too small" in result.output
