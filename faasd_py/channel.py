"""Channels between the worker and a sandbox: one `Channel` protocol, several transports.

`SocketChannel` is the portable transport of DESIGN.md (a Unix socketpair carrying
length-prefixed msgpack frames). Both ends use it: the worker in its event loop, the runtime in
the sandbox's. The shared-memory channel of the native shim implements the same protocol.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Protocol

from faasd_py.protocol import FrameDecoder, encode


class ChannelClosed(Exception):
    """The peer closed the channel (or died)."""


class Channel(Protocol):
    async def send(self, message: dict[str, Any]) -> None: ...

    async def receive(self) -> dict[str, Any]:
        """The next message; raises ChannelClosed at end of stream."""
        ...

    def close(self) -> None: ...


_READ_CHUNK = 256 * 1024


class SocketChannel:
    """Length-prefixed msgpack frames over a connected stream socket."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_frame)
        self._pending: list[dict[str, Any]] = []
        self._send_lock = asyncio.Lock()

    @classmethod
    async def open(cls, sock: socket.socket, max_frame: int) -> SocketChannel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=_READ_CHUNK)
        return cls(reader, writer, max_frame)

    async def send(self, message: dict[str, Any]) -> None:
        frame = encode(message)
        try:
            self._writer.write(frame)
            # Concurrent senders share one writer; drain one at a time.
            async with self._send_lock:
                await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise ChannelClosed(str(exc)) from exc

    async def receive(self) -> dict[str, Any]:
        while not self._pending:
            try:
                data = await self._reader.read(_READ_CHUNK)
            except ConnectionError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not data:
                raise ChannelClosed("end of stream")
            self._pending.extend(self._decoder.feed(data))
        return self._pending.pop(0)

    def close(self) -> None:
        self._writer.close()
