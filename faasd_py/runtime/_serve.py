"""The runtime's loop: report ready, then run each invocation that arrives on the channel."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from faasd_py.channel import ChannelClosed, SocketChannel
from faasd_py.protocol import Invocation, Result
from faasd_py.runtime._event import Context, Event, to_response
from faasd_py.runtime._loader import Handler, load_handler


async def serve(args: argparse.Namespace) -> int:
    """Serve the channel until the worker closes it; the exit code of the instance."""
    channel = await SocketChannel.open(socket.socket(fileno=args.fd), args.max_frame)
    started = time.perf_counter()
    try:
        handle, is_async = load_handler(args.function_dir, args.deps_dir)
    except BaseException as exc:
        traceback.print_exc()
        await channel.send({"op": "load_failed", "error": _describe(exc)})
        return 1
    await channel.send(
        {"op": "ready", "pid": os.getpid(), "load_seconds": time.perf_counter() - started}
    )
    runner = _Runner(args, channel, handle, is_async)
    tasks: set[asyncio.Task[None]] = set()
    while True:
        try:
            message = await channel.receive()
        except ChannelClosed:
            return 0
        if message["op"] == "invoke":
            task = asyncio.create_task(runner.run(Invocation.from_wire(message)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


class _Runner:
    def __init__(
        self, args: argparse.Namespace, channel: SocketChannel, handle: Handler, is_async: bool
    ) -> None:
        self._function_name: str = args.function_name
        self._secrets_dir = args.secrets_dir
        self._max_body: int = args.max_body
        self._channel = channel
        self._handle = handle
        self._is_async = is_async
        # With one invocation at a time a sync handler runs on the loop's thread: no thread hop
        # on the hot path, and nothing else needs the loop meanwhile (a hung handler is killed
        # by the worker). With more, sync handlers run in as many threads.
        self._inline = args.max_inflight == 1
        self._executor = ThreadPoolExecutor(max_workers=args.max_inflight, thread_name_prefix="fn")

    async def run(self, invocation: Invocation) -> None:
        started = time.perf_counter()
        event = Event.from_request(
            invocation.method,
            invocation.path,
            invocation.query,
            invocation.headers,
            invocation.body,
        )
        context = Context(
            function_name=self._function_name,
            call_id=invocation.call_id,
            secrets_dir=self._secrets_dir,
            deadline=time.monotonic() + invocation.timeout,
        )
        try:
            if self._is_async:
                value = await self._handle(event, context)
            elif self._inline:
                value = self._handle(event, context)
            else:
                loop = asyncio.get_running_loop()
                value = await loop.run_in_executor(self._executor, self._handle, event, context)
            status, headers, body = to_response(value)
            if len(body) > self._max_body:
                raise ValueError(
                    f"the response body of {len(body)} bytes exceeds the limit of "
                    f"{self._max_body} bytes"
                )
            error = None
        except Exception as exc:
            # The traceback goes to the function's logs; the caller gets type and message.
            traceback.print_exc()
            status, headers, body, error = 500, [], b"", _describe(exc)
        result = Result(
            id=invocation.id,
            status=status,
            headers=headers,
            body=body,
            error=error,
            seconds=time.perf_counter() - started,
        )
        with contextlib.suppress(ChannelClosed):
            await self._channel.send(result.to_wire())


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
