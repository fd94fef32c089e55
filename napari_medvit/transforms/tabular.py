"""Tabular inputs (for DAFT): a feature list -> the model's input vector (numpy only).

A feature is a dict with ``name``, optionally ``unit``, ``default``, ``mean``/``std`` (the
training statistics, from the checkpoint manifest) and ``missing`` (the name of its 0/1
missing-value indicator). The vector holds the values in list order, then the indicators in
list order; a missing value is entered as its (standardised) mean, i.e. 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def tabular_names(features: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of the vector's entries: the values, then the missing-value indicators."""
    return [f["name"] for f in features] + [f["missing"] for f in features if f.get("missing")]


def tabular_vector(features: Sequence[Mapping[str, Any]], values: Mapping[str, Any]) -> np.ndarray:
    """Build the model input from ``values`` (name -> number, or None / NaN for missing).

    Raises ValueError naming an unknown name, a required value that is missing, or a value that is
    not a number.
    """
    known = {f["name"] for f in features}
    unknown = sorted(set(values) - known - {f.get("missing") for f in features})
    if unknown:
        raise ValueError(f"unknown tabular feature(s) {unknown}; expected {sorted(known)}")
    vals, flags = [], []
    for f in features:
        v = values.get(f["name"], f.get("default"))
        missing = v is None or (isinstance(v, float) and np.isnan(v))
        if missing and not f.get("missing"):
            raise ValueError(f"tabular feature {f['name']!r} is required (it has no missing-value indicator)")
        if not missing:
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"tabular feature {f['name']!r} must be a number, got {v!r}") from None
            mean, std = float(f.get("mean", 0.0)), float(f.get("std", 1.0)) or 1.0
            vals.append((v - mean) / std)
        else:
            vals.append(0.0)
        if f.get("missing"):
            flags.append(1.0 if missing else 0.0)
    return np.asarray(vals + flags, dtype=np.float32)
