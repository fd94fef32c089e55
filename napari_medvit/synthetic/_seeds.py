"""Argument checks and seed derivation shared by the synthetic generators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

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


T = TypeVar("T")


def select_cases(seeds: list[int], cases: Any = None) -> list[int]:
    """The seeds of the cases at the indices ``cases`` (None: all): a part of a dataset, rebuilt exactly."""
    if cases is None:
        return seeds
    picked = [int(i) for i in cases]
    if any(not 0 <= i < len(seeds) for i in picked) or len(set(picked)) != len(picked):
        raise ValueError(f"case indices must be distinct and lie in 0..{len(seeds) - 1}, got {picked}")
    return [seeds[i] for i in picked]


def map_cases(fn: Callable[[int], T], seeds: list[int], workers: Any = 1) -> list[T]:
    """``[fn(s) for s in seeds]``, in ``workers`` processes when more than one (same results, same order:
    every case depends on its seed only). ``fn`` must be picklable (a module-level function or a
    ``functools.partial`` of one); the processes are spawned, never forked, so that a caller holding
    Qt or CUDA state is safe."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if workers == 1 or len(seeds) < 2:
        return [fn(s) for s in seeds]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(int(workers), len(seeds)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, seeds, chunksize=max(1, len(seeds) // (4 * int(workers)))))
