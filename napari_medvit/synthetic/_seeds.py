"""Argument checks and seed derivation shared by the synthetic generators."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_seed(seed: Any) -> int:
    """A non-negative integer seed (bools and other types are refused by name)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return int(seed)


def derived_seeds(n: Any, seed: Any) -> list[int]:
    """``n`` distinct case seeds drawn from ``seed``: what every ``generate_*_dataset`` generates from."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    rng = np.random.default_rng(check_seed(seed))
    return [int(s) for s in rng.choice(2**31 - 1, size=int(n), replace=False)] if n else []
