"""What users run today: the OpenFaaS python3-http template's index.py, served by waitress.

The template (openfaas/python-flask-template, template/python3-http/index.py) wraps the
function's `handle(event, context)` in a Flask app that waitress serves; of-watchdog sits in
front of it in a real deployment. This is that app alone, with the hello handler inline and
no of-watchdog, so it answers the same body as the other servers of bench/warm.py:

    python bench/_warm_flask.py --port 8082
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from flask import Flask, request
from waitress import serve  # type: ignore[import-untyped]

app = Flask(__name__)


def handle(event: Event, context: Context) -> dict[str, Any]:
    """The benchmark's function, as a user writes it for the template."""
    return {"statusCode": 200, "body": "hello"}


class Event:
    def __init__(self) -> None:
        self.body = request.get_data()
        self.headers = request.headers
        self.method = request.method
        self.query = request.args
        self.path = request.path


class Context:
    def __init__(self) -> None:
        self.hostname = os.getenv("HOSTNAME", "localhost")


def format_response(res: dict[str, Any] | None) -> tuple[Any, ...]:
    """The template's format_status_code, format_body and format_headers, in one."""
    if res is None:
        return ("", 200)
    status = res.get("statusCode", 200)
    body = res.get("body", "")
    headers = res.get("headers", {})
    if isinstance(headers, dict):
        headers = list(headers.items())
    return (body if isinstance(body, bytes | dict) else str(body), status, headers)


@app.route("/", defaults={"path": ""}, methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
@app.route("/<path:path>", methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
def call_handler(path: str) -> tuple[Any, ...]:
    return format_response(handle(Event(), Context()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The template calls serve(app, host=..., port=...): waitress's defaults (4 threads).
    serve(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
