"""A faasd-py function: `handle` answers every request sent to /function/<name>.

`event` has body (bytes), headers, method, query (a dict) and path; `context` has
function_name, call_id, remaining_time() and secret(name). Return a body (str, bytes, or a
JSON value) or a dict with statusCode, body and headers. `handle` may also be `async def`.
Add third-party packages to requirements.txt; `faasd-py build` installs them.
"""

from __future__ import annotations

from typing import Any


def handle(event: Any, context: Any) -> dict[str, Any]:
    name = event.query.get("name") or event.body.decode(errors="replace").strip() or "world"
    return {
        "statusCode": 200,
        "body": f"Hello, {name}!\n",
        "headers": {"Content-Type": "text/plain; charset=utf-8"},
    }
