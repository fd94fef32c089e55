"""Helpers shared by the tests that check napari layers (not a test module)."""

from __future__ import annotations

import numpy as np
from napari.layers import Layer


def data_to_world_matrix(layer: Layer) -> np.ndarray:
    """The layer's composed data->world matrix, probed through its public mapping."""
    n = layer.ndim
    probes = np.vstack([np.zeros(n), np.eye(n)])
    world = np.array([layer.data_to_world(p) for p in probes])
    matrix = np.eye(n + 1)
    matrix[:n, n] = world[0]
    matrix[:n, :n] = (world[1:] - world[0]).T
    return matrix
