"""Export corrected masks for retraining, in the nnU-Net v2 / Medical Segmentation Decathlon layout.

```
<dataset>/
  dataset.json            channel_names, labels, numTraining, file_ending (nnU-Net v2)
  imagesTr/<case>_0000.nii.gz (one file per channel; 2D frames: <case>_0000.png holding RGB)
  labelsTr/<case>.nii.gz  (or .png)
  provenance/<case>.json  model, checkpoint sha256, plugin version, time, original-vs-corrected metrics
```

3D and DICOM sources are written as NIfTI with the source geometry; 2D frames as PNG. Nothing is
silently overwritten: exporting a case id that exists with different labels writes a new version
(``<case>_v2``, ``_v3`` ...) and the provenance says which one it supersedes. All files are written
atomically, dataset.json last.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_medvit.io import (
    ImageMeta,
    atomic_write,
    finished_files,
    read_image,
    write_nifti_labels,
    write_png_labels,
)

_CASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass
class ExportedCase:
    case_id: str
    image_files: list[Path]
    label_file: Path
    provenance_file: Path
    supersedes: str | None


def mask_metrics(original: np.ndarray, corrected: np.ndarray,
                 spacing: tuple[float, ...] | None = None) -> dict[str, Any]:
    """Agreement of the model's mask and the corrected one (foreground = label > 0): Dice, IoU and
    HD95 (in mm with ``spacing``) from MONAI's metrics, and the number of edited voxels."""
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

    a, b = np.asarray(original), np.asarray(corrected)
    if a.shape != b.shape:
        raise ValueError(f"original mask {a.shape} and corrected mask {b.shape} differ in shape")
    pred = torch.from_numpy((a > 0).astype(np.float32))[None, None]
    ref = torch.from_numpy((b > 0).astype(np.float32))[None, None]
    out: dict[str, Any] = {"edited_voxels": int(np.count_nonzero(a != b))}
    if not ref.any() and not pred.any():
        return {**out, "dice": 1.0, "iou": 1.0, "hd95": 0.0}
    out["dice"] = float(compute_dice(pred, ref, include_background=True, ignore_empty=False)[0, 0])
    out["iou"] = float(compute_iou(pred, ref, include_background=True, ignore_empty=False)[0, 0])
    if ref.any() and pred.any():
        hd = compute_hausdorff_distance(pred, ref, include_background=True, percentile=95,
                                        spacing=list(spacing) if spacing else None)
        out["hd95"] = float(hd[0, 0])
    else:
        out["hd95"] = None  # undefined when one mask is empty
    return out


def box_agreement(original: np.ndarray, corrected: np.ndarray, *, original_classes: list[Any] | None = None,
                  corrected_classes: list[Any] | None = None, moved_iou: float = 0.9) -> dict[str, Any]:
    """Agreement of the model's boxes and the corrected ones, both (N, 4) as (y0, x0, y1, x1).

    Boxes are paired by Hungarian matching on 1 - IoU (``scipy.optimize.linear_sum_assignment`` on
    ``torchvision.ops.box_iou``); a pair that does not overlap is no match (a removed box and an
    added one). Returns the counts ``original``, ``corrected``, ``matched``, ``added`` (corrected
    boxes without a match), ``removed`` (original boxes without one), ``moved`` (matched with IoU
    below ``moved_iou``), ``unchanged`` (the other matched pairs), ``mean_iou`` of the matched
    pairs (None without any) and, with both class lists, ``relabelled`` (matched pairs whose class
    changed).
    """
    import torch
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_iou

    boxes = []
    for name, b in (("original", original), ("corrected", corrected)):
        b = np.asarray(b, dtype=float)
        if b.size == 0:
            b = b.reshape(0, 4)
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"{name} boxes must have shape (N, 4) as (y0, x0, y1, x1); got {b.shape}")
        if not np.isfinite(b).all() or (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
            raise ValueError(f"{name} boxes must be finite with y1 >= y0 and x1 >= x0")
        boxes.append(b)
    a, b = boxes
    for name, classes, n in (("original", original_classes, len(a)), ("corrected", corrected_classes, len(b))):
        if classes is not None and len(classes) != n:
            raise ValueError(f"{n} {name} boxes but {len(classes)} {name} classes")
    # IoU is the same with both boxes' axes swapped: (y0, x0, y1, x1) goes in as torchvision's (x1, y1, x2, y2)
    iou = box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy() if len(a) and len(b) else np.zeros((len(a), len(b)))
    rows, cols = linear_sum_assignment(1.0 - iou) if iou.size else (np.zeros(0, int), np.zeros(0, int))
    keep = iou[rows, cols] > 0
    rows, cols, ious = rows[keep], cols[keep], iou[rows[keep], cols[keep]]
    out: dict[str, Any] = {
        "original": len(a), "corrected": len(b), "matched": int(keep.sum()),
        "added": len(b) - int(keep.sum()), "removed": len(a) - int(keep.sum()),
        "moved": int((ious < moved_iou).sum()), "unchanged": int((ious >= moved_iou).sum()),
        "mean_iou": float(ious.mean()) if ious.size else None,
    }
    if original_classes is not None and corrected_classes is not None:
        out["relabelled"] = int(sum(original_classes[i] != corrected_classes[j]
                                    for i, j in zip(rows, cols, strict=True)))
    return out


def _dataset_json(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); fix or move it before exporting into this folder") from exc


def _next_version(root: Path, case_id: str, ending: str) -> str:
    n = 2
    while (root / "labelsTr" / f"{case_id}_v{n}{ending}").exists():
        n += 1
    return f"{case_id}_v{n}"


def export_case(dataset: str | Path, case_id: str, image: np.ndarray, meta: ImageMeta, labels: np.ndarray, *,
                label_names: dict[str, int], channel_names: dict[str, str] | None = None,
                original: np.ndarray | None = None, provenance: dict[str, Any] | None = None) -> ExportedCase:
    """Add one case (image + corrected labels) to an export folder; see the module docstring."""
    if not _CASE.match(case_id):
        raise ValueError(f"case id {case_id!r}: use letters, digits, '_' or '-' (no spaces or path separators)")
    root = Path(dataset)
    image, labels = np.asarray(image), np.asarray(labels)
    spatial = meta.spatial_shape(image.shape)  # also right for stacked modalities (channel, z, y, x)
    if tuple(labels.shape) != tuple(spatial):
        raise ValueError(f"labels of shape {labels.shape} do not match the image's spatial shape {tuple(spatial)}")
    if labels.min() < 0:
        raise ValueError("labels must be non-negative integers")
    two_d = meta.ndim == 2
    ending = ".png" if two_d else ".nii.gz"
    info = _dataset_json(root)
    if info and info.get("file_ending") not in (None, ending):
        raise ValueError(f"{root} holds {info['file_ending']} cases; this {meta.ndim}D case would be {ending}: "
                         "use another export folder")
    for sub in ("imagesTr", "labelsTr", "provenance"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    supersedes = None
    existing = root / "labelsTr" / f"{case_id}{ending}"
    if existing.exists():
        old, _ = read_image(existing)
        if old.shape == labels.shape and np.array_equal(old, labels):
            raise ValueError(f"case {case_id!r} is already exported with exactly these labels")
        supersedes, case_id = case_id, _next_version(root, case_id, ending)

    channels = [image] if (two_d or image.ndim == meta.ndim) else list(image)
    image_files = []
    for c, data in enumerate(channels):
        target = root / "imagesTr" / f"{case_id}_{c:04d}{ending}"
        if two_d:
            from skimage.io import imsave

            atomic_write(target, functools.partial(imsave, arr=np.asarray(data), check_contrast=False))
        else:
            _write_nifti_image(target, data, meta)
        image_files.append(target)
    label_file = root / "labelsTr" / f"{case_id}{ending}"
    if two_d:
        write_png_labels(label_file, labels)
    else:
        write_nifti_labels(label_file, labels, meta)

    from napari_medvit import __version__

    record = {
        "case_id": case_id,
        "supersedes": supersedes,
        "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "plugin_version": __version__,
        "source": meta.source_path,
        **(provenance or {}),
    }
    if original is not None:
        calibrated = meta.calibrated and meta.ndim == np.ndim(labels)
        record["original_vs_corrected"] = mask_metrics(original, labels, meta.spacing if calibrated else None)
        record["original_vs_corrected"]["hd95_unit"] = "mm" if calibrated else "pixels"
    prov_file = root / "provenance" / f"{case_id}.json"
    atomic_write(prov_file, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))

    n_cases = len(finished_files(root / "labelsTr", f"*{ending}"))
    names = channel_names or ({"0": "R", "1": "G", "2": "B"} if two_d and meta.rgb else
                              {str(i): f"channel {i}" for i in range(len(channels))})
    info.update({"channel_names": names, "labels": dict(label_names), "numTraining": n_cases, "file_ending": ending,
                 "name": info.get("name", root.name), "description": "exported by napari-medvit"})
    atomic_write(root / "dataset.json", lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2)))
    return ExportedCase(case_id, image_files, label_file, prov_file, supersedes)


def _write_nifti_image(path: Path, data: np.ndarray, meta: ImageMeta) -> None:
    """An image channel with the source geometry (the labels writer's geometry, image dtype kept)."""
    import nibabel as nib

    from napari_medvit.io.nifti import nifti_image_like

    atomic_write(path, lambda tmp: nib.save(nifti_image_like(np.asarray(data), meta), tmp))


def export_boxes_coco(dataset: str | Path, image_id: str, image: np.ndarray, meta: ImageMeta, boxes: np.ndarray,
                      categories: list[str], box_labels: list[int], *,
                      provenance: dict[str, Any] | None = None) -> Path:
    """Add one 2D image and its corrected boxes ((y0, x0, y1, x1) pixels) to ``annotations.json`` (COCO).

    The image is written to ``images/<image_id>.png``; an image id already present is versioned
    like :func:`export_case`. Boxes are clipped to the image (a box dragged partly off the frame
    keeps its visible part); a box with nothing left inside the image is refused by name.
    """
    from skimage.io import imsave

    if not _CASE.match(image_id):
        raise ValueError(f"image id {image_id!r}: use letters, digits, '_' or '-'")
    if meta.ndim != 2:
        raise ValueError(f"COCO export takes 2D images; this one is {meta.ndim}D")
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    if len(box_labels) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(box_labels)} labels")
    if any(not 0 <= c < len(categories) for c in box_labels):
        raise ValueError(f"box labels must index the {len(categories)} categories {categories}")
    h, w = meta.spatial_shape(np.asarray(image).shape)
    boxes = np.clip(boxes, 0, [h, w, h, w])
    empty = [i for i, (y0, x0, y1, x1) in enumerate(boxes) if y1 <= y0 or x1 <= x0]
    if empty:
        raise ValueError(f"box(es) {empty} lie outside the {h}x{w} image: delete or move them before exporting")
    root = Path(dataset)
    (root / "images").mkdir(parents=True, exist_ok=True)
    ann_path = root / "annotations.json"
    try:
        coco: dict[str, Any] = json.loads(ann_path.read_text()) if ann_path.exists() else {
            "images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories)]}
        known = [c["name"] for c in coco["categories"]]
        if not (isinstance(coco["images"], list) and isinstance(coco["annotations"], list)):
            raise TypeError("'images' and 'annotations' must be lists")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{ann_path}: not a COCO annotations file ({type(exc).__name__}: {exc}); fix or move it "
                         "before exporting into this folder") from exc
    if known != list(categories):
        raise ValueError(f"{ann_path} has categories {[c['name'] for c in coco['categories']]}, not {categories}")
    names = {img["file_name"] for img in coco["images"]}
    name = f"{image_id}.png"
    n = 2
    while name in names or (root / "images" / name).exists():  # also a class-label export's image
        name, n = f"{image_id}_v{n}.png", n + 1
    atomic_write(root / "images" / name, lambda tmp: imsave(tmp, np.asarray(image), check_contrast=False))
    img_id = max((img["id"] for img in coco["images"]), default=0) + 1
    coco["images"].append({"id": img_id, "file_name": name, "height": int(h), "width": int(w),
                           "medvit_provenance": provenance or {}})
    next_ann = max((a["id"] for a in coco["annotations"]), default=0) + 1
    for k, ((y0, x0, y1, x1), c) in enumerate(zip(boxes, box_labels, strict=True)):
        bw, bh = float(x1 - x0), float(y1 - y0)
        coco["annotations"].append({"id": next_ann + k, "image_id": img_id, "category_id": int(c) + 1,
                                    "bbox": [float(x0), float(y0), bw, bh], "area": bw * bh, "iscrowd": 0})
    atomic_write(ann_path, lambda tmp: Path(tmp).write_text(json.dumps(coco, indent=1)))
    return root / "images" / name


def export_class_label(dataset: str | Path, case_id: str, label: str, *, image: np.ndarray | None = None,
                       meta: ImageMeta | None = None, tabular: dict[str, float | None] | None = None,
                       provenance: dict[str, Any] | None = None) -> Path:
    """Add a case's corrected class (and DAFT's tabular row) to ``labels.csv``, rewritten atomically.

    With ``image`` and ``meta`` the image is written to ``images/<case_id>.png`` (2D 8/16-bit or
    RGB; other 2D types, e.g. a CT slice, as ``.tif``) or
    ``images/<case_id>.nii.gz`` (3D, source geometry) and the row's ``image`` column names it
    (relative to the folder), so the folder can be trained on. Columns: ``case_id``, ``label``,
    ``image``, the tabular variables (empty = missing), ``provenance`` (JSON). A case id already
    present is versioned (``_v2`` ...), never overwritten.
    """
    import csv
    import io

    if not _CASE.match(case_id):
        raise ValueError(f"case id {case_id!r}: use letters, digits, '_' or '-'")
    if (image is None) != (meta is None):
        raise ValueError("export_class_label: give both image and meta, or neither")
    root = Path(dataset)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "labels.csv"
    rows = list(csv.DictReader(path.open(newline=""))) if path.exists() else []
    def taken(case: str) -> bool:  # a row, or an image of the folder (e.g. a COCO export's)
        return any(r["case_id"] == case for r in rows) or any(
            (root / "images" / f"{case}{ending}").exists() for ending in (".png", ".tif", ".nii.gz"))

    if taken(case_id):
        n = 2
        while taken(f"{case_id}_v{n}"):
            n += 1
        case_id = f"{case_id}_v{n}"
    row: dict[str, Any] = {"case_id": case_id, "label": label, "image": ""}
    if image is not None and meta is not None:
        (root / "images").mkdir(exist_ok=True)
        if meta.ndim == 2:
            from skimage.io import imsave

            # frames (8/16-bit, RGB) as PNG; other types (a CT or MR slice: int16, float) as lossless TIFF
            png = np.asarray(image).dtype in (np.uint8, np.uint16, np.bool_)
            target = root / "images" / f"{case_id}.{'png' if png else 'tif'}"
            atomic_write(target, lambda tmp: imsave(tmp, np.asarray(image), check_contrast=False))
        else:
            target = root / "images" / f"{case_id}.nii.gz"
            _write_nifti_image(target, np.asarray(image), meta)
        row["image"] = f"images/{target.name}"
    row.update({k: ("" if v is None else v) for k, v in (tabular or {}).items()})
    if provenance:
        row["provenance"] = json.dumps(provenance, sort_keys=True)
    rows.append(row)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(buffer.getvalue()))
    return path
