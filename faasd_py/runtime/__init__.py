"""What runs inside a sandbox: loads the function's handler and serves its channel.

Started by the worker as `python -S -s -m faasd_py.runtime ...` with only the function package,
its dependencies and this runtime on its path. It imports nothing beyond the standard library,
msgpack and (for the shm channel) the native shim, so cold starts stay cheap.
"""

from __future__ import annotations

from faasd_py.runtime._channel import (
    BlockingChannel,
    BlockingShmChannel,
    BlockingSocketChannel,
    open_channel,
)
from faasd_py.runtime._event import CaseInsensitiveHeaders, Context, Event
from faasd_py.runtime._multidict import ImmutableMultiDict, MissingKey
from faasd_py.runtime._response import BadReturn, to_response

__all__ = [
    "BadReturn",
    "BlockingChannel",
    "BlockingShmChannel",
    "BlockingSocketChannel",
    "CaseInsensitiveHeaders",
    "Context",
    "Event",
    "ImmutableMultiDict",
    "MissingKey",
    "open_channel",
    "to_response",
]
