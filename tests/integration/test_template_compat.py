"""Functions written for OpenFaaS's python3-http template run unchanged: the folder loads as the
package `function`, the event and context are the template's, return values answer as its
index.py (with Flask) answers them, and the function's requirements win over the runtime's own
packages (msgpack). Through the real gateway into real instances, with the zygote (the default:
instances forked from it) and without (each instance imports the handler itself), on the shm
and the socket channels.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from faasd_py.packages import PackageStore
from faasd_py.spec import FunctionSpec, StackFunction
from tests.integration.conftest import Platform, start_platform, stop_platform

MODES: dict[str, dict[str, Any]] = {
    "zygote-shm": {"zygote": True, "channel": "shm"},
    "exec-shm": {"zygote": False, "channel": "shm"},
    "zygote-socket": {"zygote": True, "channel": "socket"},
}


@pytest.fixture(params=list(MODES))
async def platform(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Platform]:
    if MODES[request.param]["channel"] == "shm":
        from faasd_py import native

        if not native.HAS_NATIVE:
            pytest.skip("the shm channel needs the native shim")
    running = await start_platform(tmp_path, **MODES[request.param])
    try:
        yield running
    finally:
        await stop_platform(running)


async def deploy_folder(platform: Platform, name: str, files: Mapping[str, str]) -> None:
    """Build a function folder of these files (paths relative to it) and deploy it."""
    folder = platform.tmp / "src" / name
    for relative, text in {"requirements.txt": "", **files}.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    image = f"{name}:latest"
    PackageStore(platform.config.packages_dir).build(
        StackFunction(
            spec=FunctionSpec(service=name, image=image), lang="python3-http", handler=folder
        )
    )
    await platform.deploy(name)


async def call_json(platform: Platform, name: str, **kwargs: Any) -> Any:
    status, body, _ = await platform.invoke(name, **kwargs)
    assert status == 200, body
    return json.loads(body)


def assert_mode_ran(platform: Platform, name: str) -> None:
    """The instance started as the mode says: forked from a zygote, or exec'd."""
    stats = platform.worker.launcher_statistics(name)
    if platform.config.zygote:
        # Sandboxed, a function with no zygote yet starts from the worker's base zygote.
        base = platform.worker.base_zygote_statistics()
        forked = stats.forks >= 1 or (base is not None and base.forks >= 1)
        assert forked and stats.fallbacks == 0, (stats, base)
    else:
        assert stats.execs >= 1 and stats.forks == 0, stats


# The template's own example, template/python3-http/function/handler.py, byte for byte.
TEMPLATE_HANDLER = """\
def handle(event, context):
    # TODO implement
    return {
        "statusCode": 200,
        "body": "Hello from OpenFaaS!"
    }"""


async def test_the_templates_example_handler_runs_unchanged(platform: Platform) -> None:
    await deploy_folder(platform, "example", {"handler.py": TEMPLATE_HANDLER})
    status, body, headers = await platform.invoke("example", method="GET")
    assert (status, body) == (200, b"Hello from OpenFaaS!")
    assert headers["Content-Type"] == "text/html; charset=utf-8"  # as Flask sends a str
    assert_mode_ran(platform, "example")


PACKAGE = {
    "__init__.py": "LOADED_AS = __name__\n",
    "handler.py": """
        from .helper import greet
        from function import helper as absolute
        from .utils.text import shout
        import helper as sibling
        import function
        from lib.tools import TOOL  # a folder without __init__.py: a namespace package
        from .lib import tools

        def handle(event, context):
            return {"body": {
                "greeting": greet("Ada"),
                "shout": shout("hi"),
                "package": function.LOADED_AS,
                "name": __name__,
                "one_module": absolute is sibling and sibling.CALLS is absolute.CALLS,
                "calls": sibling.count(),
                "namespace": TOOL is tools.TOOL,
            }}
        """,
    "helper.py": """
        from .utils import SUFFIX

        CALLS = []

        def greet(name):
            return "hello " + name + SUFFIX

        def count():
            CALLS.append(1)
            return len(CALLS)
        """,
    "utils/__init__.py": "SUFFIX = '!'\n",
    "lib/tools.py": "TOOL = object()\n",
    "utils/text.py": """
        from . import SUFFIX

        def shout(word):
            return word.upper() + SUFFIX
        """,
}


async def test_the_folder_is_the_package_function(platform: Platform) -> None:
    await deploy_folder(platform, "pkg", PACKAGE)
    seen = await call_json(platform, "pkg")
    assert seen == {
        "greeting": "hello Ada!",  # relative import, itself importing relatively
        "shout": "HI!",  # a subpackage
        "package": "function",  # its __init__.py ran, as the package `function`
        "name": "function.handler",
        "one_module": True,  # `import helper` is `function.helper`, not a second copy
        "calls": 1,
        "namespace": True,
    }
    assert (await call_json(platform, "pkg"))["calls"] == 2
    assert_mode_ran(platform, "pkg")


EVENT = """
import os

def handle(event, context):
    q = event.query
    return {"body": {
        "first": q["a"], "get": q.get("a"), "all": q.getlist("a"), "n": q.get("n", type=int),
        "flat": q.to_dict(), "lists": q.to_dict(flat=False), "keys": list(q), "len": len(q),
        "has_b": "b" in q, "dict": dict(q),
        "headers": sorted(name for name in event.headers if name.startswith("X-")),
        "hostname": context.hostname, "env": os.environ.get("HOSTNAME"),
        "method": event.method, "path": event.path, "body": event.body.decode(),
    }}
"""


async def test_event_and_context_are_the_templates(platform: Platform) -> None:
    await deploy_folder(platform, "event", {"handler.py": EVENT})
    seen = await call_json(
        platform,
        "event",
        method="PUT",
        path="/a/b",
        params=[("a", "1"), ("b", ""), ("a", "2"), ("n", "7")],
        headers={"x-lower-case": "1"},
        body=b"payload",
    )
    assert seen["first"] == seen["get"] == "1"  # Flask's request.args: the first value
    assert seen["all"] == ["1", "2"] and seen["n"] == 7
    assert seen["flat"] == seen["dict"] == {"a": "1", "b": "", "n": "7"}
    assert seen["lists"] == {"a": ["1", "2"], "b": [""], "n": ["7"]}
    assert seen["keys"] == ["a", "b", "n"] and seen["len"] == 3 and seen["has_b"] is True
    assert "X-Lower-Case" in seen["headers"]  # title-cased, as WSGI shows them
    assert (seen["method"], seen["path"], seen["body"]) == ("PUT", "/a/b", "payload")
    # context.hostname: $HOSTNAME, the instance's own id (as a container's name in OpenFaaS),
    # whether it was forked from the zygote or started fresh.
    assert seen["hostname"] == seen["env"]
    assert seen["hostname"].startswith("event-") and "zygote" not in seen["hostname"]
    assert_mode_ran(platform, "event")


async def test_a_missing_query_parameter_is_a_400_as_with_flask(platform: Platform) -> None:
    await deploy_folder(
        platform,
        "named",
        {"handler.py": "def handle(event, context):\n    return event.query['name']\n"},
    )
    status, body, _ = await platform.invoke("named")
    assert status == 400
    assert "no query parameter 'name'" in json.loads(body)["error"]
    assert (await platform.invoke("named", params={"name": "Bo"}))[:2] == (200, b"Bo")


SHAPES = """
import datetime

SHAPES = {
    "json": {"statusCode": 201, "body": {"z": 1, "a": datetime.date(2015, 10, 21)}},
    "text": {"statusCode": 202, "body": "made", "headers": {"X-A": 1}},
    "number": {"body": 42},
    "nobody": {"statusCode": 200, "headers": {"Location": "/x"}},
    "binary": {"body": b"\\x89PNG\\x00", "headers": {"Content-type": "application/octet-stream"}},
    "none": None,
    "tuple": ("created", 201, {"X-B": "2"}),
    "list": [1, "a"],
}

def handle(event, context):
    return SHAPES[event.query["shape"]]
"""


@pytest.mark.parametrize(
    ("shape", "status", "content_type", "body", "header"),
    [
        ("json", 201, "application/json", b'{"a":"Wed, 21 Oct 2015 00:00:00 GMT","z":1}\n', None),
        ("text", 202, "text/html; charset=utf-8", b"made", ("X-A", "1")),
        ("number", 200, "text/html; charset=utf-8", b"42", None),
        ("nobody", 200, "text/html; charset=utf-8", b"", ("Location", "/x")),
        ("binary", 200, "application/octet-stream", b"\x89PNG\x00", None),
        ("none", 200, "text/html; charset=utf-8", b"", None),
        ("tuple", 201, "text/html; charset=utf-8", b"created", ("X-B", "2")),
        ("list", 200, "application/json", b'[1,"a"]\n', None),
    ],
)
async def test_return_shapes_answer_as_the_template(
    platform: Platform,
    shape: str,
    status: int,
    content_type: str,
    body: bytes,
    header: tuple[str, str] | None,
) -> None:
    await deploy_folder(platform, "shapes", {"handler.py": SHAPES})
    got_status, got_body, headers = await platform.invoke(
        "shapes", params={"shape": shape}, allow_redirects=False
    )
    assert (got_status, got_body) == (status, body)
    assert headers["Content-Type"] == content_type
    if header is not None:
        assert headers[header[0]] == header[1]


PINNED = """
import msgpack

def handle(event, context):
    packed = msgpack.packb({"n": int(event.query.get("n", "0"))})
    context.storage.put("blob", packed)
    back = msgpack.unpackb(context.storage.get("blob"))
    return {"body": {"version": list(msgpack.version), "file": msgpack.__file__, "back": back}}
"""


async def test_the_functions_own_msgpack_wins_over_the_runtimes(platform: Platform) -> None:
    import msgpack

    assert msgpack.version != (1, 0, 5), "the runtime's own must differ from the pinned one"
    await deploy_folder(
        platform, "pinned", {"handler.py": PINNED, "requirements.txt": "msgpack==1.0.5\n"}
    )
    for n in range(3):  # the runtime still speaks msgpack to the worker, with its own copy
        seen = await call_json(platform, "pinned", params={"n": str(n)})
        assert seen["version"] == [1, 0, 5]
        assert "/deps/" in seen["file"] or "/site/" in seen["file"], seen["file"]
        assert seen["back"] == {"n": n}  # context.storage, over the channel, still works
    assert_mode_ran(platform, "pinned")


VENDORED = """
import msgpack

def handle(event, context):
    context.storage.put("k", event.body)
    return {"body": {"version": list(msgpack.version), "stored": context.storage.get("k").decode()}}
"""


async def test_the_runtime_keeps_its_own_msgpack_whatever_the_function_brings(
    platform: Platform,
) -> None:
    # A msgpack of the function's own that could not frame a single message: were the runtime
    # to pick it up (in the zygote, in an instance), no invocation would come back.
    broken = "version = (0, 0, 0)\n\ndef packb(*args, **kwargs):\n    raise RuntimeError('no')\n"
    await deploy_folder(
        platform, "vendored", {"handler.py": VENDORED, "msgpack/__init__.py": broken}
    )
    for word in ("one", "two"):
        seen = await call_json(platform, "vendored", body=word.encode())
        assert seen == {"version": [0, 0, 0], "stored": word}
    assert_mode_ran(platform, "vendored")
