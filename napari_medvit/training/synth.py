"""Write the package's synthetic datasets as export folders, the same folders the viewer's *Export* writes.

``medvit synth KIND --out DIR --n N --seed S`` (see :func:`write_synthetic`) is how the demo
checkpoints' training data is made, so that training them only calls the project's CLI
(``medvit synth``, ``medvit finetune``, ``medvit package``) on ordinary export folders:

- ``endoscopy``: :func:`~napari_medvit.synthetic.generate_endoscopy_dataset` frames into three
  folders: ``segmentation/`` (nnU-Net layout: imagesTr/, labelsTr/, dataset.json; label 1 = polyp),
  ``detection/`` (COCO ``annotations.json`` + images/, one "polyp" box per polyp, frames without a
  polyp as negatives) and ``classification/`` (``labels.csv`` + images/, "present" / "absent").

Every case's provenance records the generator and its seed, so each case can be regenerated
exactly. The same ``seed`` and ``n`` always give the same folders; use different seeds for the
training and the held-out test folders (the seeds of one call are drawn from ``seed``, so two
calls with different seeds may share a frame only with negligible probability).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_medvit.io import ImageMeta

KINDS = ("endoscopy",)


def _fresh(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty: write a synthetic dataset into a new folder")


def write_endoscopy(out: str | Path, n: int, seed: int = 0, shape: tuple[int, int] = (288, 384)) -> dict[str, Any]:
    """Write ``n`` synthetic frames (see the module docstring); returns a summary of what was written."""
    from napari_medvit.synthetic import generate_endoscopy_dataset
    from napari_medvit.training.export import export_boxes_coco, export_case, export_class_label

    if n < 2:
        raise ValueError(f"n must be at least 2 (a training and a validation case), got {n}")
    root = Path(out)
    folders = {k: root / k for k in ("segmentation", "detection", "classification")}
    for folder in folders.values():
        _fresh(folder)
    meta = ImageMeta.identity(2, rgb=True)
    n_polyps = []
    for i, frame in enumerate(generate_endoscopy_dataset(n, seed, tuple(shape))):
        case = f"synth-{seed}-{i:04d}"
        prov = {"generator": "napari_medvit.synthetic.generate_endoscopy_frame", "seed": frame.seed,
                "shape": list(shape), "synthetic": True}
        export_case(folders["segmentation"], case, frame.image, meta, frame.mask,
                    label_names={"background": 0, "polyp": 1}, provenance=prov)
        export_boxes_coco(folders["detection"], case, frame.image, meta, frame.boxes, ["polyp"],
                          [0] * len(frame.boxes), provenance=prov)
        export_class_label(folders["classification"], case, "present" if frame.present else "absent",
                           image=frame.image, meta=meta, provenance=prov)
        n_polyps.append(len(frame.boxes))
    counts = np.bincount(n_polyps, minlength=4)
    return {"kind": "endoscopy", "cases": n, "seed": seed, "shape": list(shape),
            "frames_by_polyp_count": {str(k): int(c) for k, c in enumerate(counts)},
            "folders": {k: str(v) for k, v in folders.items()}}


def write_synthetic(kind: str, out: str | Path, n: int, seed: int = 0, **options: Any) -> dict[str, Any]:
    """Write the synthetic dataset ``kind`` (one of :data:`KINDS`) into ``out``."""
    if kind == "endoscopy":
        return write_endoscopy(out, n, seed, **options)
    raise ValueError(f"unknown synthetic dataset {kind!r}; choose one of {KINDS}")
