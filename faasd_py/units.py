"""Parsing of the quantities users write: durations ("30s"), sizes ("16Mi", "4k"), CPU ("500m").

Kubernetes quantity suffixes for sizes and CPU, Go-style suffixes for durations, as OpenFaaS
users write them in stack.yml and environment variables. Each parser raises ValueError with a
message that shows the accepted forms.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_SIZE_SUFFIXES = {
    "": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    # Lower-case binary forms as people type them on a command line ("4k" above is decimal).
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_size(text: str | int) -> int:
    """Bytes from "128Mi", "1G", "4k", "512" (Kubernetes quantity suffixes)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"size must not be negative, got {text}")
        return text
    match = _SIZE.match(str(text))
    if match is None:
        raise ValueError(f"expected a size such as 128Mi, 1G or 4096, got {text!r}")
    number, suffix = match.groups()
    factor = _SIZE_SUFFIXES.get(suffix, _SIZE_SUFFIXES.get(suffix.lower()))
    if factor is None:
        raise ValueError(f"unknown size suffix {suffix!r} in {text!r}; use Ki, Mi, Gi, K, M or G")
    # Fractions exactly, so large whole quantities do not lose bytes through a float.
    return int(Fraction(number) * factor)


def parse_cpu(text: str | int | float) -> float:
    """Cores from "500m", "0.5", "2" (Kubernetes CPU quantities)."""
    raw = str(text).strip()
    try:
        cores = float(raw[:-1]) / 1000 if raw.endswith("m") else float(raw)
    except ValueError:
        raise ValueError(f"expected a CPU quantity such as 500m, 0.5 or 2, got {text!r}") from None
    if not math.isfinite(cores):
        raise ValueError(f"expected a finite CPU quantity such as 500m or 2, got {text!r}")
    if cores <= 0:
        raise ValueError(f"CPU quantity must be positive, got {text!r}")
    return cores


def parse_duration(text: str | int | float) -> float:
    """Seconds from "30s", "1m30s", "250ms" or a plain number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip()
        try:
            seconds = float(raw)
        except ValueError:
            parts = _DURATION_PART.findall(raw)
            if not parts or "".join(n + u for n, u in parts) != raw:
                raise ValueError(
                    f"expected a duration such as 30s, 250ms or 1m30s, got {text!r}"
                ) from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration such as 30s, got {text!r}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {text!r}")
    return seconds
