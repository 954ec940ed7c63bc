"""Entry point of a sandbox instance: `python -S -s -m faasd_py.runtime --channel=shm ...`."""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
from pathlib import Path

from faasd_py.runtime._loader import Handler
from faasd_py.runtime._serve import serve

Loaded = tuple[Handler, bool]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.fd is None and args.zygote is None and args.listen is None:
        parser.error("--fd is required (or --zygote, or --listen for net)")
    return args


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """Built once (the base zygote builds it before it forks: a start from it only parses)."""
    parser = argparse.ArgumentParser(prog="faasd_py.runtime")
    parser.add_argument("--channel", choices=("shm", "socket", "net"), default="socket")
    parser.add_argument(
        "--fd", type=int, help="the channel's socket or memfd; net: a listening socket"
    )
    parser.add_argument("--listen", help="net: HOST:PORT to serve HTTP on (own netns)")
    parser.add_argument("--doorbell-fd", type=int, help="shm: the worker's eventfd")
    parser.add_argument("--worker-pidfd", type=int, help="shm, net: readable once the worker exits")
    parser.add_argument("--spin", type=int, default=0, help="shm: spins before sleeping")
    parser.add_argument("--function-name", required=True)
    parser.add_argument("--instance-id", help="the worker's name for this instance ($HOSTNAME)")
    parser.add_argument("--function-dir", type=Path, required=True)
    parser.add_argument("--deps-dir", type=Path)
    parser.add_argument("--secrets-dir", type=Path, required=True)
    parser.add_argument("--max-inflight", type=int, default=1)
    parser.add_argument("--max-frame", type=int, required=True)
    parser.add_argument("--max-body", type=int, required=True)
    parser.add_argument("--memory-limit", type=int, help="bytes of address space")
    parser.add_argument(
        "--zygote", type=int, metavar="CONTROL_FD", help="import, then fork instances on request"
    )
    return parser


def main(argv: list[str] | None = None, loaded: Loaded | None = None) -> None:
    """Serve as the flags say. `loaded`: the handler, already imported (the base zygote's
    fork imports it before, to time it)."""
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.memory_limit:
        # Before the handler is imported, so the limit covers everything it allocates. Hard and
        # soft alike, so the handler cannot lift it. (The native sandbox moves this to cgroups.)
        # A zygote's forked instances inherit it.
        resource.setrlimit(resource.RLIMIT_AS, (args.memory_limit, args.memory_limit))
    if args.zygote is not None:
        from faasd_py.runtime import _zygote

        # Returns only in a forked instance, with its own flags: from here on it runs as an
        # exec'd instance would, minus the import.
        args, loaded = _zygote.run(args, parse)
    code = serve(args, loaded)
    sys.stdout.flush()
    sys.stderr.flush()
    # Handler threads may still be blocked; they must not keep the instance alive.
    os._exit(code)


if __name__ == "__main__":
    main()
