"""Chaos: the soak's load while processes are killed with SIGKILL at random.

    python bench/chaos.py                     # or: make bench-chaos (both targets, 3 min each)
    python bench/chaos.py --target up --duration 60 --every 15

`--target processes` kills a random instance or zygote every `--every` seconds; `--target up`
kills the whole `faasd-py up` and starts it again on the same data dir and port. Writes
bench/results/chaos-TARGET.{json,md,png}: failed calls by kind, the recovery time of each kill
(to the next 200), and that nothing acknowledged was lost (every write that answered 200 is
read back after the run).
"""

from __future__ import annotations

import argparse
import random
import sys

import _longrun


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("processes", "up"), default="processes")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load (180)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between kills (10)")
    parser.add_argument("--share", type=float, default=0.5, help="of the maximum rate (0.5)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    next_kill = args.every

    def chaos(at: float, harness: _longrun.Harness) -> None:
        nonlocal next_kill
        if at < next_kill or at > args.duration - args.every:
            return  # the last interval is left for recovery
        next_kill += args.every
        target = "up" if args.target == "up" else rng.choice(("instance", "zygote"))
        _longrun.kill(harness, target, at, rng)

    what = "instances and zygotes" if args.target == "processes" else "the whole up"
    return _longrun.run_long(
        f"chaos-{args.target}",
        f"Chaos: SIGKILL to {what} every {args.every:g} s under {args.share:.0%} of the maximum",
        duration=args.duration,
        share=args.share,
        chaos=chaos,
        notes=[
            f"Load as in the soak (storage put + get + log per call); a random {what} "
            f"killed every {args.every:g} s (seed {args.seed}), none in the last interval.",
        ],
    )


if __name__ == "__main__":
    sys.exit(main())
