"""Soak: a steady open-loop load at 80% of the measured maximum for 10 minutes, with storage
calls and logs in the mix; `up`'s memory and open files sampled each second.

    python bench/soak.py                      # or: make bench-soak
    python bench/soak.py --duration 120       # shorter

Writes bench/results/soak.{json,md,png}: errors by kind, p50/p99 per minute, RSS and open fds
over time, and every acknowledged write read back at the end (none may be lost).
"""

from __future__ import annotations

import argparse
import sys

import _longrun


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (600)")
    parser.add_argument("--share", type=float, default=0.8, help="of the maximum rate (0.8)")
    args = parser.parse_args(argv)
    return _longrun.run_long(
        "soak",
        f"Soak: {args.share:.0%} of the maximum for {args.duration:g} s",
        duration=args.duration,
        share=args.share,
        notes=[
            "One function (storage put + get + a log line per call, max_inflight 4, up to "
            "4 instances), open-loop POSTs of 64 B, 1 KiB or 16 KiB; the client runs on the "
            "same machine.",
        ],
    )


if __name__ == "__main__":
    sys.exit(main())
