"""Argument types the benchmark scripts share: comma-separated lists checked as they are parsed,
so that a typo is a usage error before anything starts."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def int_list(text: str) -> list[int]:
    """`1,16,64` -> [1, 16, 64]; positive numbers only."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers such as 1,16,64, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def choice_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """A type for `a,b` where each part is one of `choices`."""

    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [v for v in values if v not in choices]
        if not values or unknown:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}, got {text!r}")
        return values

    return parse
