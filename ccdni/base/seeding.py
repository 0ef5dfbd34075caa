"""Seeds: every region and purpose draws from its own deterministic stream of the run's seed."""

from __future__ import annotations


def derived_seed(seed: int, stream: str) -> int:
    """A deterministic per-region, per-purpose seed (independent of Python's hash salt)."""
    value = seed * 1_000_003
    for ch in stream:
        value = (value * 131 + ord(ch)) % (2**61 - 1)
    return value
