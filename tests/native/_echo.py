"""A child process for the native tests: the instance's end of a channel, opened exactly as the
runtime opens it (`python -m tests.native._echo --channel=... --fd=...`, the flags of
`faasd_py.datapath.channel.prepare_channel`).

    --mode echo     answer each invoke with a result carrying its body and the body's CRC-32
    --mode crash    send two results unasked (one of them large), then exit at once with code 3
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib
from collections.abc import Sequence

from faasd_py.protocol import ChannelClosed
from faasd_py.runtime import open_channel


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--channel", required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--doorbell-fd", type=int)
    parser.add_argument("--worker-pidfd", type=int)
    parser.add_argument("--spin", type=int, default=0)
    parser.add_argument("--max-frame", type=int, default=32 * 1024 * 1024)
    parser.add_argument("--mode", choices=("echo", "crash"), default="echo")
    args = parser.parse_args(argv)
    channel = open_channel(
        args.channel, args.fd, args.doorbell_fd, args.max_frame, args.spin, args.worker_pidfd
    )
    if args.mode == "crash":
        channel.send({"op": "result", "id": 1, "body": b"first"})
        channel.send({"op": "result", "id": 2, "body": b"y" * 3_000_000})
        sys.stdout.flush()
        os._exit(3)
    while True:
        try:
            message = channel.receive()
        except ChannelClosed:
            return 0
        body = message["body"]
        channel.send({"op": "result", "id": message["id"], "body": body, "crc": zlib.crc32(body)})


if __name__ == "__main__":
    sys.exit(main())
