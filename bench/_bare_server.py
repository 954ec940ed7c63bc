"""The baseline of the warm benchmark: a bare aiohttp server on uvloop that answers "hello".

It does what faasd-py's data path does at the least (parse HTTP, answer a small body) with no
gateway, worker or sandbox in between, so faasd-py / bare is the cost of the platform.

    python bench/_bare_server.py --port 8081
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web

BODY = "hello"


async def hello(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text=BODY)


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/function/{name}", hello)
    app.router.add_route("*", "/function/{name}/{path:.*}", hello)
    app.router.add_get("/healthz", hello)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(
        make_app(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
