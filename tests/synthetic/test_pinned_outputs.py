"""The seeded generators' exact output, pinned by sha256: a refactoring must not change a single bit.

Each digest covers the arrays' dtype, shape and bytes, and the ``params`` record (its keys in order).
They were taken with numpy 2.4 / scipy 1.17 on x86-64; a change of numpy or scipy that alters
floating-point rounding may move them without any change to the generators: then check the
generator code is untouched and print the new digests with ``python tests/synthetic/test_pinned_outputs.py``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pytest

from napari_medvit.synthetic import generate_brain_case, generate_dementia_case, generate_endoscopy_frame


def _digest(*parts: Any) -> str:
    """sha256 (first 32 hex digits) of arrays (dtype, shape, bytes) and JSON values, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(json.dumps(part, default=repr).encode())
    return h.hexdigest()[:32]


def _endoscopy(seed: int, shape: tuple[int, int], n_polyps: int | None) -> str:
    f = generate_endoscopy_frame(seed, shape, n_polyps=n_polyps)
    return _digest(f.image, f.mask, f.boxes, f.present, f.seed, f.params)


def _brain(seed: int, spacing: float, n_lesions: int | None) -> str:
    c = generate_brain_case(seed, spacing=spacing, n_lesions=n_lesions)
    return _digest(c.flair, c.t1, c.mask, c.affine, list(c.spacing), c.seed, c.params)


def _dementia(seed: int, shape: tuple[int, int, int]) -> str:
    c = generate_dementia_case(seed, shape=shape)
    return _digest(c.image, c.tabular, c.label, list(c.spacing), c.seed, c.params)


CASES: dict[str, Any] = {
    "endoscopy/0/128x160/None": lambda: _endoscopy(0, (128, 160), None),
    "endoscopy/1/128x160/None": lambda: _endoscopy(1, (128, 160), None),
    "endoscopy/3/288x384/3": lambda: _endoscopy(3, (288, 384), 3),
    "endoscopy/12/288x384/1": lambda: _endoscopy(12, (288, 384), 1),  # the committed sample frame
    "brain/0/4.0/None": lambda: _brain(0, 4.0, None),
    "brain/1/4.0/None": lambda: _brain(1, 4.0, None),
    "brain/2/4.0/3": lambda: _brain(2, 4.0, 3),
    "dementia/0/32": lambda: _dementia(0, (32, 32, 32)),
    "dementia/7/24x40x20": lambda: _dementia(7, (24, 40, 20)),
}

PINNED = {
    "endoscopy/0/128x160/None": "7b433923b6fce9d55f326cc755fd4414",
    "endoscopy/1/128x160/None": "2ab63bbbfeda52db14fec8e323991472",
    "endoscopy/3/288x384/3": "f6da3ddc7a28bdc1247d5b179d367e19",
    "endoscopy/12/288x384/1": "8ca0f2f0154af19d88a376e9f0ba84e6",
    "brain/0/4.0/None": "4af54b87ecba811a1cbd361dbdb4b7fa",
    "brain/1/4.0/None": "fd6b7e0904df8bb94edb162c5ccb84df",
    "brain/2/4.0/3": "d3b20db5b36f712862b492de85a4ad75",
    "dementia/0/32": "2573b5278c3dc718ba6e28d2aade1b27",
    "dementia/7/24x40x20": "3dd7a77171f88993a56695f6ba01a209",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_seeded_output_is_pinned(name: str) -> None:
    assert CASES[name]() == PINNED[name], f"{name}: the generator's output changed (see the module docstring)"


if __name__ == "__main__":
    print("PINNED = {")
    for key in CASES:
        print(f"    {key!r}: {CASES[key]()!r},")
    print("}")
