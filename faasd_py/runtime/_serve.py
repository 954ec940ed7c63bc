"""The runtime's loop: report ready, then run each invocation that arrives on the channel.

Two shapes, chosen once the handler is loaded:

- one invocation at a time with a plain (sync) handler: a loop with no asyncio at all. Receive
  blocks in C with the GIL released (shm) or in recv (socket); then handle, reply, repeat.
- an async handler, or several invocations at once (`max_inflight` > 1): an asyncio loop runs
  the handlers (sync ones in as many threads); a receiving thread blocks on the channel and
  hands each invocation to the loop.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from faasd_py.errors import StorageQuotaExceeded, StorageUnavailable
from faasd_py.protocol import ChannelClosed, Invocation, ProtocolError, Result
from faasd_py.runtime._channel import BlockingChannel, open_channel
from faasd_py.runtime._event import Context, Event
from faasd_py.runtime._loader import Handler, load_handler
from faasd_py.runtime._multidict import MissingKey
from faasd_py.runtime._response import to_response
from faasd_py.runtime._storage import InlineTransport, NoTransport, Storage, ThreadedTransport

if TYPE_CHECKING:
    import asyncio


def serve(args: argparse.Namespace, loaded: tuple[Handler, bool] | None = None) -> int:
    """Serve the channel until the worker closes it; the exit code of the instance.
    `loaded`: the handler, when a zygote imported it before forking this instance."""
    channel = open_channel(
        args.channel,
        args.fd,
        args.doorbell_fd,
        args.max_frame,
        args.spin,
        args.worker_pidfd,
        listen=args.listen,
        max_body=args.max_body,
    )
    set_hostname(getattr(args, "instance_id", None))
    started = time.perf_counter()
    try:
        handle, is_async = loaded or load_handler(args.function_dir, args.deps_dir)
    except BaseException as exc:
        traceback.print_exc()
        channel.send({"op": "load_failed", "error": describe_error(exc)})
        channel.shutdown()
        return 1
    channel.send({"op": "ready", "pid": os.getpid(), "load_seconds": time.perf_counter() - started})
    runner = _Runner(args, handle, is_async)
    # context.storage rides on the channel's messages; the net channel carries only HTTP
    # invocations, so its handlers get a storage that says so.
    storage_ok = args.channel != "net"
    if not is_async and args.max_inflight == 1:
        return _serve_inline(channel, runner, storage_ok)
    import asyncio

    return asyncio.run(_serve_concurrent(channel, runner, storage_ok))


def set_hostname(instance_id: str | None) -> None:
    """$HOSTNAME, the template's `context.hostname` (in OpenFaaS, the container's name): the
    instance's id when the worker gives it (--instance-id), else the name of the host the
    instance sees (a sandbox's own UTS name: its instance id, or a forked one's zygote). One the
    function's environment sets is kept. Set in each instance, so never in a zygote."""
    os.environ.setdefault("HOSTNAME", instance_id or os.uname().nodename)


def _serve_inline(channel: BlockingChannel, runner: _Runner, storage_ok: bool) -> int:
    """One at a time, no event loop: receive, handle, reply. A handler's storage call reads the
    channel itself until its reply comes (InlineTransport)."""
    transport = InlineTransport(channel)
    runner.storage = Storage(
        transport if storage_ok else NoTransport("the net channel"), runner.max_body
    )
    while True:
        try:
            message = transport.receive()
        except ChannelClosed:
            return 0
        if message["op"] != "invoke":
            continue
        result = runner.run(Invocation.from_wire(message))
        try:
            channel.send(result.to_wire())
        except ChannelClosed:
            return 0


async def _serve_concurrent(channel: BlockingChannel, runner: _Runner, storage_ok: bool) -> int:
    """Several at once: a thread receives, the loop runs handlers and replies. Storage replies
    go from the receiving thread straight to the handler waiting for them (ThreadedTransport),
    which also serializes sends: handler threads send storage calls as the loop sends results."""
    import asyncio

    transport = ThreadedTransport(channel)
    runner.storage = Storage(
        transport if storage_ok else NoTransport("the net channel"), runner.max_body
    )
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()
    tasks: set[asyncio.Task[None]] = set()

    async def run(invocation: Invocation) -> None:
        result = await runner.run_async(invocation)
        with contextlib.suppress(ChannelClosed):
            transport.send(result.to_wire())

    def dispatch(message: dict[str, Any]) -> None:
        if message["op"] == "invoke":
            task = loop.create_task(run(Invocation.from_wire(message)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def end() -> None:
        if not ended.done():
            ended.set_result(None)

    def receive_forever() -> None:
        try:
            while True:
                message = channel.receive()
                if not transport.deliver(message):
                    loop.call_soon_threadsafe(dispatch, message)
        except (ChannelClosed, ProtocolError):
            pass
        finally:
            transport.close()
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(end)

    threading.Thread(target=receive_forever, name="channel", daemon=True).start()
    await ended
    return 0


class _Runner:
    def __init__(self, args: argparse.Namespace, handle: Handler, is_async: bool) -> None:
        self._function_name: str = args.function_name
        self._secrets_dir = args.secrets_dir
        self.max_body: int = args.max_body
        self._handle = handle
        self._is_async = is_async
        self.storage: Storage | None = None
        self._executor: ThreadPoolExecutor | None = None
        if not is_async and args.max_inflight > 1:
            self._executor = ThreadPoolExecutor(
                max_workers=args.max_inflight, thread_name_prefix="fn"
            )

    def run(self, invocation: Invocation) -> Result:
        """A sync handler, on this thread."""
        started = time.perf_counter()
        try:
            value = self._handle(*self._arguments(invocation))
        except Exception as exc:
            return self._failed(invocation, started, exc)
        return self._respond(invocation, started, value)

    async def run_async(self, invocation: Invocation) -> Result:
        """An async handler on the loop, or a sync one in the executor."""
        started = time.perf_counter()
        try:
            event, context = self._arguments(invocation)
            if self._is_async:
                value = await self._handle(event, context)
            else:
                import asyncio

                loop = asyncio.get_running_loop()
                value = await loop.run_in_executor(self._executor, self._handle, event, context)
        except Exception as exc:
            return self._failed(invocation, started, exc)
        return self._respond(invocation, started, value)

    def _arguments(self, invocation: Invocation) -> tuple[Event, Context]:
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
            storage=self.storage,
        )
        return event, context

    def _respond(self, invocation: Invocation, started: float, value: object) -> Result:
        try:
            status, headers, body = to_response(value)
            if len(body) > self.max_body:
                raise ValueError(
                    f"the response body of {len(body)} bytes exceeds the limit of "
                    f"{self.max_body} bytes"
                )
        except Exception as exc:
            return self._failed(invocation, started, exc)
        return Result(
            id=invocation.id,
            status=status,
            headers=headers,
            body=body,
            error=None,
            seconds=time.perf_counter() - started,
        )

    def _failed(self, invocation: Invocation, started: float, exc: Exception) -> Result:
        # The traceback goes to the function's logs; the caller gets type and message.
        traceback.print_exc()
        return Result(
            id=invocation.id,
            # A store that is down is the platform's failure, not the handler's: 503; an app's
            # storage quota full is 507 (Insufficient Storage). A query
            # parameter or header the request lacks (`event.query["x"]`) is the caller's: 400,
            # as Flask answers it in the python3-http template.
            status=exc.status
            if isinstance(exc, StorageUnavailable | StorageQuotaExceeded | MissingKey)
            else 500,
            headers=[],
            body=b"",
            error=describe_error(exc),
            seconds=time.perf_counter() - started,
        )


def describe_error(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
