"""Write the package's synthetic datasets as export folders, the same folders the viewer's *Export* writes.

``medvit synth KIND --out DIR --n N --seed S`` (see :func:`write_synthetic`) is how the demo
checkpoints' training data is made, so that training them only calls the project's CLI
(``medvit synth``, ``medvit finetune``, ``medvit package``) on ordinary export folders:

- ``endoscopy``: :func:`~napari_medvit.synthetic.generate_endoscopy_dataset` frames into three
  folders: ``segmentation/`` (nnU-Net layout: imagesTr/, labelsTr/, dataset.json; label 1 = polyp),
  ``detection/`` (COCO ``annotations.json`` + images/, one "polyp" box per polyp, frames without a
  polyp as negatives) and ``classification/`` (``labels.csv`` + images/, "present" / "absent").

- ``brain``: :func:`~napari_medvit.synthetic.generate_brain_dataset` subjects (MNI152-based FLAIR +
  T1 with white-matter-hyperintensity-like lesions) into ``segmentation/``, nnU-Net layout with the
  two co-registered channels (``_0000`` FLAIR, ``_0001`` T1, NIfTI with the subject's geometry)
  and the lesion mask (label 1 = lesion); ``--spacing`` mm (default 2.0).

- ``dementia``: :func:`~napari_medvit.synthetic.generate_dementia_dataset` subjects for DAFT into
  ``classification/``: ``labels.csv`` (CN / MCI / Dementia) with the nine ADNI tabular columns
  (empty = missing) and the 64^3 T1-like volumes under images/ (NIfTI); the class depends on the
  image (atrophy) and on the tabular biomarkers together.

Every case's provenance records the generator and its seed, so each case can be regenerated
exactly. The same ``seed`` and ``n`` always give the same folders; use different seeds for the
training and the held-out test folders (the seeds of one call are drawn from ``seed``, so two
calls with different seeds may share a frame only with negligible probability).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_medvit.io import ImageMeta

KINDS = ("endoscopy", "brain", "dementia")


def _fresh(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty: write a synthetic dataset into a new folder")


def case_index(case_id: str) -> int:
    """The dataset index of a synthetic case id (``synth-<seed>-<index>``, as the writers name them)."""
    prefix, _, index = str(case_id).rpartition("-")
    if not prefix.startswith("synth-") or not index.isdigit():
        raise ValueError(f"{case_id!r} is not a synthetic case id (synth-<seed>-<index>)")
    return int(index)


def _indices(n: int, cases: Any) -> list[int]:
    if n < 2:
        raise ValueError(f"n must be at least 2 (a training and a validation case), got {n}")
    return list(range(n)) if cases is None else [int(i) for i in cases]


def brain_case_meta(case: Any) -> ImageMeta:
    """The geometry of a synthetic brain case (:class:`~napari_medvit.synthetic.BrainCase`): its affine maps
    (z, y, x) indices to MNI152 RAS mm; read as NIfTI's (x, y, z) -> RAS, then to the plugin's world."""
    from napari_medvit.io.nifti import nifti_to_world_affine

    world = nifti_to_world_affine(np.asarray(case.affine)[:, [2, 1, 0, 3]])
    return ImageMeta.from_affine(world, axes=("z", "y", "x"), modality="MR")


def dementia_case_meta(case: Any) -> ImageMeta:
    """The geometry of a synthetic DAFT subject: its voxel spacing, axis-aligned at the origin."""
    return ImageMeta(spacing=case.spacing, origin=(0.0, 0.0, 0.0),
                     direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), axes=("z", "y", "x"),
                     modality="MR")


def write_endoscopy(out: str | Path, n: int, seed: int = 0, shape: tuple[int, int] = (288, 384), *,
                    workers: int = 1, cases: Any = None) -> dict[str, Any]:
    """Write ``n`` synthetic frames (see the module docstring); returns a summary of what was written."""
    from napari_medvit.synthetic import generate_endoscopy_dataset
    from napari_medvit.training.export import export_boxes_coco, export_case, export_class_label

    root = Path(out)
    folders = {k: root / k for k in ("segmentation", "detection", "classification")}
    for folder in folders.values():
        _fresh(folder)
    meta = ImageMeta.identity(2, rgb=True)
    n_polyps = []
    indices = _indices(n, cases)
    frames = generate_endoscopy_dataset(n, seed, shape, workers=workers, cases=indices)
    for i, frame in zip(indices, frames, strict=True):
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
    return {"kind": "endoscopy", "cases": len(indices), "seed": seed, "shape": list(shape),
            "frames_by_polyp_count": {str(k): int(c) for k, c in enumerate(counts)},
            "folders": {k: str(v) for k, v in folders.items()}}


def write_brain(out: str | Path, n: int, seed: int = 0, spacing: float = 2.0, *, workers: int = 1,
                cases: Any = None) -> dict[str, Any]:
    """Write ``n`` synthetic FLAIR + T1 subjects with lesion masks (see the module docstring)."""
    from napari_medvit.synthetic import generate_brain_dataset
    from napari_medvit.training.export import export_case

    folder = Path(out) / "segmentation"
    _fresh(folder)
    volumes = []
    indices = _indices(n, cases)
    subjects = generate_brain_dataset(n, seed, spacing=spacing, workers=workers, cases=indices)
    for i, case in zip(indices, subjects, strict=True):
        meta = brain_case_meta(case)
        prov = {"generator": "napari_medvit.synthetic.generate_brain_case", "seed": case.seed,
                "spacing": spacing, "synthetic": True, "lesion_volume_ml": case.params.get("lesion_volume_ml")}
        export_case(folder, f"synth-{seed}-{i:04d}", np.stack([case.flair, case.t1]), meta, case.mask,
                    label_names={"background": 0, "lesion": 1}, channel_names={"0": "FLAIR", "1": "T1"},
                    provenance=prov)
        volumes.append(float(case.params.get("lesion_volume_ml") or 0.0))
    return {"kind": "brain", "cases": len(indices), "seed": seed, "spacing": spacing, "shape": list(case.mask.shape),
            "lesion_volume_ml": {"median": float(np.median(volumes)), "max": float(np.max(volumes))},
            "folders": {"segmentation": str(folder)}}


def write_dementia(out: str | Path, n: int, seed: int = 0, *, workers: int = 1, cases: Any = None) -> dict[str, Any]:
    """Write ``n`` synthetic DAFT subjects: volume + tabular row + diagnosis (see the module docstring)."""
    from napari_medvit.synthetic import generate_dementia_dataset
    from napari_medvit.training.export import export_class_label

    folder = Path(out) / "classification"
    _fresh(folder)
    labels = []
    indices = _indices(n, cases)
    for i, case in zip(indices, generate_dementia_dataset(n, seed, workers=workers, cases=indices), strict=True):
        meta = dementia_case_meta(case)
        prov = {"generator": "napari_medvit.synthetic.generate_dementia_case", "seed": case.seed, "synthetic": True}
        export_class_label(folder, f"synth-{seed}-{i:04d}", case.label, image=case.image, meta=meta,
                           tabular=case.tabular, provenance=prov)
        labels.append(case.label)
    return {"kind": "dementia", "cases": len(indices), "seed": seed,
            "labels": {c: labels.count(c) for c in ("CN", "MCI", "Dementia")},
            "folders": {"classification": str(folder)}}


def write_synthetic(kind: str, out: str | Path, n: int, seed: int = 0, *, workers: int = 1, cases: Any = None,
                    **options: Any) -> dict[str, Any]:
    """Write the synthetic dataset ``kind`` (one of :data:`KINDS`) into ``out``, with ``synth.json``
    recording how (kind, n, seed, options): :func:`regenerate` rebuilds the same folders from it.
    ``workers`` > 1 generates the cases in that many processes (the same folders, faster)."""
    import json

    from napari_medvit.io import atomic_write

    writers: dict[str, Callable[..., dict[str, Any]]] = {"endoscopy": write_endoscopy, "brain": write_brain,
                                                         "dementia": write_dementia}
    if kind not in writers:
        raise ValueError(f"unknown synthetic dataset {kind!r}; choose one of {KINDS}")
    summary = writers[kind](out, n, seed, workers=workers, cases=cases, **options)
    recipe = {"kind": kind, "n": n, "seed": seed, "options": {k: list(v) if isinstance(v, tuple) else v
                                                               for k, v in options.items()},
              **({"cases": [int(i) for i in cases]} if cases is not None else {})}  # a part of the dataset
    atomic_write(Path(out) / "synth.json", lambda tmp: Path(tmp).write_text(json.dumps(recipe, indent=1)))
    return summary


def synth_recipe(folder: str | Path) -> dict[str, Any] | None:
    """The recipe of a synthetic export folder (``synth.json`` in it or its parent) with ``part``, the
    sub-folder name (e.g. "segmentation"); None for data that was not generated here."""
    import json

    folder = Path(folder)
    for root, part in ((folder, ""), (folder.parent, folder.name)):
        if (root / "synth.json").is_file():
            return {**json.loads((root / "synth.json").read_text()), "part": part}
    return None


def regenerate(recipe: dict[str, Any], out: str | Path, *, workers: int = 1, cases: Any = None) -> Path:
    """Write the dataset of ``recipe`` (see :func:`synth_recipe`) into ``out``; returns the recorded part's folder.
    ``cases``: only the cases of these indices (their ids and data as in the whole dataset)."""
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.get("options", {}).items()}
    write_synthetic(recipe["kind"], out, int(recipe["n"]), int(recipe["seed"]), workers=workers,
                    cases=recipe.get("cases") if cases is None else cases, **options)
    return Path(out) / recipe.get("part", "")
