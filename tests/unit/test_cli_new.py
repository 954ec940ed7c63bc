"""`faasd-py new` and `build`: scaffolding on real folders, and the scaffold builds and answers."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from faasd_py.cli import cli
from faasd_py.cli._local import add_function_to_stack
from faasd_py.cli._templates import FPROCESS
from faasd_py.errors import SpecError
from faasd_py.packages import PackageStore
from faasd_py.runtime import Context, Event, to_response
from faasd_py.spec import load_stack, parse_yaml


def run(*args: str | Path, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def entry(name: str) -> dict[str, str]:
    return {"lang": "python3-http", "handler": f"./{name}", "image": f"{name}:latest"}


def load_handler(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("scaffolded_handler", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handle


def test_new_scaffolds_a_function_that_answers(tmp_path: Path) -> None:
    result = run("new", "hello", "--dir", tmp_path)

    assert result.exit_code == 0, result.output
    assert (tmp_path / "hello" / "requirements.txt").read_text() == ""
    stack = load_stack(tmp_path / "stack.yml")
    assert stack.gateway == "http://127.0.0.1:8080"
    (fn,) = stack.functions
    assert (fn.spec.service, fn.spec.image, fn.lang) == ("hello", "hello:latest", "python3-http")
    assert fn.handler == (tmp_path / "hello").resolve()

    handle = load_handler(tmp_path / "hello" / "handler.py")
    event = Event.from_request("POST", "/", "", [("Content-Type", "text/plain")], b"Ada")
    context = Context("hello", "call-1", tmp_path, deadline=0.0)
    status, headers, body = to_response(handle(event, context))
    assert (status, body) == (200, b"Hello, Ada!\n")
    assert ("Content-Type", "text/plain; charset=utf-8") in headers
    query_event = Event.from_request("GET", "/", "name=Bo", [], b"")
    assert to_response(handle(query_event, context))[2] == b"Hello, Bo!\n"


def test_new_adds_to_an_existing_stack_and_keeps_its_comments(tmp_path: Path) -> None:
    assert run("new", "first", "--dir", tmp_path).exit_code == 0
    stack_file = tmp_path / "stack.yml"
    stack_file.write_text("# my functions\n" + stack_file.read_text() + "# trailing note\n")

    result = run("new", "second", "--dir", tmp_path)

    assert result.exit_code == 0, result.output
    text = stack_file.read_text()
    assert text.startswith("# my functions\n") and "# trailing note" in text
    assert [f.spec.service for f in load_stack(stack_file).functions] == ["first", "second"]


def test_new_refuses_a_name_already_in_the_stack(tmp_path: Path) -> None:
    assert run("new", "hello", "--dir", tmp_path).exit_code == 0
    (tmp_path / "hello" / "handler.py").write_text("# mine\n")
    before = (tmp_path / "stack.yml").read_text()

    result = run("new", "hello", "--dir", tmp_path)

    assert result.exit_code == 1
    assert "already in the stack file" in result.stderr
    assert (tmp_path / "stack.yml").read_text() == before
    assert (tmp_path / "hello" / "handler.py").read_text() == "# mine\n"


def test_new_refuses_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    result = run("new", "taken", "--dir", tmp_path)
    assert result.exit_code == 1
    assert "exists already" in result.stderr
    assert not (tmp_path / "stack.yml").exists()


@pytest.mark.parametrize("bad", ["Hello", "x-", "under_score", "a" * 64])
def test_new_refuses_invalid_names(tmp_path: Path, bad: str) -> None:
    result = run("new", bad, "--dir", tmp_path)
    assert result.exit_code == 1
    assert "not a valid function name" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_new_rejects_an_unknown_template(tmp_path: Path) -> None:
    result = run("new", "hello", "--lang", "cobol", "--dir", tmp_path)
    assert result.exit_code == 2
    assert "python3-http" in result.stderr


def test_add_follows_the_stacks_indentation() -> None:
    text = "provider:\n    name: openfaas\nfunctions:\n    a:\n        lang: python3-http\n"
    text += "        handler: ./a\n        image: a:latest\n\nconfiguration: {}\n"

    edited = add_function_to_stack(text, "b", entry("b"))

    assert "    b:\n        lang: python3-http\n" in edited
    assert edited.endswith("configuration: {}\n")
    assert yaml.safe_load(edited)["functions"] == {"a": entry("a"), "b": entry("b")}


def test_add_rewrites_a_stack_whose_functions_are_not_a_block() -> None:
    edited = add_function_to_stack("version: 1.0\nfunctions: {}\n", "b", entry("b"))
    assert parse_yaml(edited, "stack.yml") == {"version": "1.0", "functions": {"b": entry("b")}}


def test_a_rewritten_stack_keeps_every_value_as_written() -> None:
    text = "functions: {a: {lang: python3, handler: ./a, image: 'a:1', environment: "
    text += "{V: 1.10, T: 10:30, O: 017, F: off}}}\n"
    edited = add_function_to_stack(text, "b", entry("b"))
    env = parse_yaml(edited, "stack.yml")["functions"]["a"]["environment"]
    assert env == {"V": "1.10", "T": "10:30", "O": "017", "F": "off"}


def test_add_to_a_file_without_trailing_newline() -> None:
    text = "functions:\n  a:\n    lang: python3-http\n    handler: ./a\n    image: a:latest"
    edited = add_function_to_stack(text, "b", entry("b"))
    assert yaml.safe_load(edited)["functions"] == {"a": entry("a"), "b": entry("b")}


def test_add_rejects_a_stack_that_is_not_a_mapping() -> None:
    with pytest.raises(SpecError):
        add_function_to_stack("- just\n- a list\n", "b", entry("b"))


def test_build_packages_the_scaffold(tmp_path: Path) -> None:
    assert run("new", "hello", "--dir", tmp_path).exit_code == 0
    data = tmp_path / "data"

    result = run("build", "-f", tmp_path / "stack.yml", "--data-dir", data)

    assert result.exit_code == 0, result.output
    assert "hello:latest" in result.stdout
    assert "copying handler" in result.stderr
    package = PackageStore(data / "packages").get("hello")
    assert package is not None and (package.function_dir / "handler.py").is_file()


def test_build_of_a_name_not_in_the_stack_fails(tmp_path: Path) -> None:
    assert run("new", "hello", "--dir", tmp_path).exit_code == 0
    result = run("build", "-f", tmp_path / "stack.yml", "--data-dir", tmp_path, "nope")
    assert result.exit_code == 1
    assert "not in the stack file: nope" in result.stderr


def test_build_without_a_stack_file_says_so(tmp_path: Path) -> None:
    result = run("build", "-f", tmp_path / "missing.yml", "--data-dir", tmp_path)
    assert result.exit_code == 1
    assert "cannot read the stack file" in result.stderr


# --- the template folder faas-cli reads -----------------------------------------------------------


def faas_cli_template(path: Path) -> dict[str, Any]:
    """template.yml read as faas-cli reads it (its LanguageTemplate: language, fprocess,
    build_options, welcome_message, handler_folder), checking each field's type as Go would."""
    doc = parse_yaml(path.read_text(), str(path))
    assert isinstance(doc, dict)
    for key in ("language", "fprocess", "welcome_message", "handler_folder"):
        assert isinstance(doc.get(key, ""), str), key
    options = doc.get("build_options") or []
    assert isinstance(options, list)
    for option in options:
        assert isinstance(option, dict) and isinstance(option.get("name", ""), str)
        assert all(isinstance(p, str) for p in option.get("packages") or [])
    return doc


def test_new_writes_the_template_that_faas_cli_deploy_reads(tmp_path: Path) -> None:
    result = run("new", "hello", "--dir", tmp_path)

    assert result.exit_code == 0, result.output
    path = tmp_path / "template" / "python3-http" / "template.yml"
    assert f"Created {path}" in result.stdout
    template = faas_cli_template(path)
    assert template["language"] == "python3-http"
    # What `faas-cli deploy` sends as envProcess: the process that runs a faasd-py function.
    assert template["fprocess"] == FPROCESS
    assert "faasd-py build" in template["welcome_message"]
    # The function's folder holds the function only, as faas-cli's handler folder does.
    assert sorted(p.name for p in (tmp_path / "hello").iterdir()) == [
        "handler.py",
        "requirements.txt",
    ]


def test_a_second_function_keeps_the_template_folder_as_it_is(tmp_path: Path) -> None:
    assert run("new", "first", "--dir", tmp_path).exit_code == 0
    path = tmp_path / "template" / "python3-http" / "template.yml"
    path.write_text("language: python3-http\nfprocess: python index.py\n")  # faas-cli's own

    result = run("new", "second", "--dir", tmp_path)

    assert result.exit_code == 0, result.output
    assert "template.yml" not in result.stdout
    assert path.read_text() == "language: python3-http\nfprocess: python index.py\n"


def test_build_writes_a_missing_template_for_every_lang_of_the_stack(tmp_path: Path) -> None:
    for name in ("web", "classic"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "handler.py").write_text("def handle(event, context):\n    return 1\n")
    (tmp_path / "stack.yml").write_text(
        "functions:\n"
        "  web: {lang: python3-http, handler: ./web, image: web:latest}\n"
        "  classic: {lang: python3, handler: ./classic, image: classic:latest}\n"
    )

    # Only one function built: `faas-cli deploy -f stack.yml` still reads every template.
    result = run("build", "-f", tmp_path / "stack.yml", "--data-dir", tmp_path / "data", "web")

    assert result.exit_code == 0, result.output
    for lang in ("python3-http", "python3"):
        path = tmp_path / "template" / lang / "template.yml"
        assert f"Created {path}" in result.stdout
        assert faas_cli_template(path)["language"] == lang
        assert faas_cli_template(path)["fprocess"] == FPROCESS

    again = run("build", "-f", tmp_path / "stack.yml", "--data-dir", tmp_path / "data", "web")
    assert again.exit_code == 0, again.output
    assert "template.yml" not in again.stdout


def test_build_writes_the_template_next_to_the_stack_file(tmp_path: Path) -> None:
    assert run("new", "hello", "--dir", tmp_path).exit_code == 0
    template = tmp_path / "template"
    shutil.rmtree(template)  # as a stack from before faasd-py wrote it has none

    result = run("build", "-f", tmp_path / "stack.yml", "--data-dir", tmp_path / "data")

    assert result.exit_code == 0, result.output
    assert faas_cli_template(template / "python3-http" / "template.yml")["fprocess"] == FPROCESS
