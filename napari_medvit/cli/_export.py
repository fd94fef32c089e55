"""``medvit export``: a corrected mask, boxes or a class label of an image into an export folder, as the
viewer's *Export* writes it (see :mod:`napari_medvit.training.export` and :mod:`napari_medvit.cli`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_medvit.cli._files import _read_input, _refuse_inputs

if TYPE_CHECKING:
    import numpy as np

    from napari_medvit.io import ImageMeta


# -- export ------------------------------------------------------------------------------------
_SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")


def _default_case_id(image: str) -> str:
    """The case id of an image when ``--case`` is not given: its file name without suffix, made safe."""
    import re

    name = Path(image.rstrip("/\\")).name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_") or "case"


def _names(text: str, option: str) -> list[str]:
    """Distinct, non-empty names from a comma-separated option value (ValueError naming the option)."""
    names = [n.strip() for n in text.split(",")]
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"{option} {text!r}: give distinct, non-empty names separated by commas")
    return names


def _export_provenance(args: argparse.Namespace) -> dict[str, object]:
    """The viewer's provenance fields (model, weights, checkpoint sha256) for a headless export."""
    prov: dict[str, object] = {"exported_by": "medvit export"}
    if args.checkpoint and not args.model:
        raise ValueError("--checkpoint needs --model (the model the checkpoint belongs to)")
    if args.model:
        from napari_medvit.models import get_spec

        get_spec(args.model)  # an unknown name is a ValueError listing the registered ones
        prov.update({"model": args.model, "weights": "untrained", "checkpoint": "", "checkpoint_sha256": ""})
    if args.checkpoint:
        from napari_medvit.models.checkpoint import file_sha256

        ckpt = Path(args.checkpoint)
        if not ckpt.is_file():
            raise ValueError(f"--checkpoint {args.checkpoint}: no such file")
        prov.update({"weights": ckpt.name, "checkpoint": str(ckpt.resolve()), "checkpoint_sha256": file_sha256(ckpt)})
    return prov


def _label_array(path: str, image_meta: ImageMeta, what: str) -> np.ndarray:
    """A label image read with the plugin's readers, checked against the image it labels."""
    import numpy as np

    from napari_medvit.io.frames import is_frame_path

    labels, meta = _read_input(path, what)
    labels = np.asarray(labels)
    if meta.rgb:
        raise ValueError(f"{what} {path}: an RGB image, not a label image (one integer value per pixel)")
    if labels.dtype.kind not in "biuf" or (labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels))):
        raise ValueError(f"{what} {path}: label values must be integers (dtype {labels.dtype})")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{what} {path}: label values must be non-negative (found {labels.min()})")
    if not is_frame_path(path) and meta.ndim == image_meta.ndim:  # both carry geometry: the same voxels?
        for field in ("spacing", "origin", "direction"):
            if not np.allclose(np.asarray(getattr(meta, field)), np.asarray(getattr(image_meta, field)), atol=1e-3):
                raise ValueError(f"{what} {path}: its {field} {getattr(meta, field)} differs from the image's "
                                 f"{getattr(image_meta, field)}; resample the labels onto the image grid first")
    return labels.astype(np.int64) if labels.dtype.kind in "bf" else labels


def _read_boxes(path: str, shape: tuple[int, ...]) -> tuple[list[list[float]], list[str]]:
    """(boxes as (y0, x0, y1, x1), class names) from a boxes CSV or JSON file (module docstring)."""
    import csv
    import json
    import math

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--boxes {path}: no such file")
    if file.suffix.lower() == ".json":
        try:
            rows = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"--boxes {path}: not valid JSON ({exc})") from exc
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"--boxes {path}: expected a JSON list of objects with y0, x0, y1, x1, class")
    elif file.suffix.lower() == ".csv":
        with file.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = {"y0", "x0", "y1", "x1", "class"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"--boxes {path}: the header lacks {sorted(missing)}; expected y0,x0,y1,x1,class")
            rows = list(reader)
    else:
        raise ValueError(f"--boxes {path}: use a .csv (y0,x0,y1,x1,class) or .json file")
    h, w = shape
    boxes, classes = [], []
    for n, row in enumerate(rows, start=1):
        try:
            y0, x0, y1, x1 = (float(row[k]) for k in ("y0", "x0", "y1", "x1"))
            name = str(row["class"]).strip()
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"--boxes {path}: box {n} needs numbers y0, x0, y1, x1 and a class, got {row}") from None
        if not all(math.isfinite(v) for v in (y0, x0, y1, x1)) or not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise ValueError(f"--boxes {path}: box {n} ({y0}, {x0}, {y1}, {x1}) must satisfy 0 <= y0 < y1 <= {h} "
                             f"and 0 <= x0 < x1 <= {w} (the image is {h} x {w})")
        if not name:
            raise ValueError(f"--boxes {path}: box {n} has no class")
        boxes.append([y0, x0, y1, x1])
        classes.append(name)
    return boxes, classes


def _parse_tabular(text: str | None) -> dict[str, float | None] | None:
    """``--tabular name=value,...`` as numbers (an empty value is missing: None); None without it."""
    if text is None:
        return None
    out: dict[str, float | None] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--tabular {text!r}: expected NAME=VALUE pairs separated by commas, e.g. age=71,sex=1")
        try:
            out[key.strip()] = float(value) if value.strip() else None  # empty: a missing value
        except ValueError:
            raise ValueError(f"--tabular: {key.strip()}={value!r} is not a number") from None
    return out


# -- the command: which form, then one step per form --------------------------------------------
_FORMS = (("LABELS", "labels_file"), ("--boxes", "boxes"), ("--class-label", "class_label"))
_FORM_OPTIONS = (("--original", "original", "LABELS"), ("--labels", "label_names", "LABELS"),
                 ("--categories", "categories", "--boxes"), ("--tabular", "tabular", "--class-label"))


def _export_form(args: argparse.Namespace) -> str:
    """The one form of export given (LABELS, --boxes or --class-label); ValueError for none, several,
    or an option that belongs to another form."""
    forms = [name for name, dest in _FORMS if getattr(args, dest) is not None]
    if len(forms) != 1:
        raise ValueError("give exactly one of LABELS (a mask file), --boxes FILE or --class-label NAME"
                         + (f"; got {' and '.join(forms)}" if forms else ""))
    for option, dest, form in _FORM_OPTIONS:
        if getattr(args, dest) is not None and forms[0] != form:
            raise ValueError(f"{option} goes with {form}, not with {forms[0]}")
    return forms[0]


def _check_dataset_folder(args: argparse.Namespace) -> Path:
    """``--dataset``: a folder or a new path, and neither an input nor a folder holding one."""
    if os.path.lexists(args.dataset) and not Path(args.dataset).is_dir():
        raise ValueError(f"--dataset {args.dataset}: not a folder; give the export folder (created if missing)")
    _refuse_inputs(Path(args.dataset), "--dataset", [("IMAGE", args.image), ("LABELS", args.labels_file),
                                                     ("--original", args.original)])
    return Path(args.dataset)


def _label_names(args: argparse.Namespace, root: Path) -> list[str]:
    """Label names by value: --labels, else the model's, else the folder's dataset.json, else
    background/foreground (the viewer's default for a mask without class names)."""
    import json

    if args.label_names:
        return _names(args.label_names, "--labels")
    if args.model:
        from napari_medvit.models.config import resolve

        return list(resolve(args.model).class_names)
    if (root / "dataset.json").is_file():  # the folder's own names keep a dataset consistent
        try:
            known = json.loads((root / "dataset.json").read_text()).get("labels", {})
        except json.JSONDecodeError as exc:
            raise ValueError(f"{root / 'dataset.json'}: not valid JSON ({exc})") from exc
        return [n for n, _ in sorted(known.items(), key=lambda kv: int(kv[1]))] or ["background", "foreground"]
    return ["background", "foreground"]


def _export_labels(args: argparse.Namespace, root: Path, case_id: str, image: Any, meta: ImageMeta,
                   prov: dict[str, object]) -> int:
    """LABELS (and --original) on the image's grid -> nnU-Net layout (imagesTr/, labelsTr/, dataset.json)."""
    import numpy as np

    from napari_medvit.training import export as ex

    labels = _label_array(args.labels_file, meta, "LABELS")
    original = _label_array(args.original, meta, "--original") if args.original else None
    names = _label_names(args, root)
    top = int(labels.max()) if labels.size else 0
    if top >= len(names):
        raise ValueError(f"LABELS {args.labels_file} holds the value {top} but only {len(names)} label name(s) "
                         f"{names}; name them all with --labels")
    spatial = tuple(meta.spatial_shape(np.asarray(image).shape))
    for what, given, array in (("LABELS", args.labels_file, labels), ("--original", args.original, original)):
        if array is not None and tuple(array.shape) != spatial:
            raise ValueError(f"{what} {given}: labels of shape {tuple(array.shape)} do not fit IMAGE "
                             f"{args.image} of shape {spatial}")
    case = ex.export_case(root, case_id, image, meta, labels, label_names={n: i for i, n in enumerate(names)},
                          original=original, provenance=prov)
    note = f" (a new version of {case.supersedes})" if case.supersedes else ""
    print(f"exported case {case.case_id}{note} to {root}: {case.label_file.relative_to(root)}, "
          f"{', '.join(str(p.relative_to(root)) for p in case.image_files)}")
    return 0


def _box_categories(args: argparse.Namespace, root: Path, classes: list[str]) -> list[str]:
    """COCO category names: --categories, else the folder's annotations.json, else the boxes' classes
    in order of appearance; every box's class must be among them."""
    import json

    ann = root / "annotations.json"
    if args.categories:
        categories = _names(args.categories, "--categories")
    elif ann.is_file():
        try:
            categories = [c["name"] for c in json.loads(ann.read_text())["categories"]]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{ann}: not a COCO annotations file ({exc})") from exc
    else:
        categories = list(dict.fromkeys(classes))
    unknown = sorted(set(classes) - set(categories))
    if unknown:
        raise ValueError(f"--boxes {args.boxes}: class(es) {unknown} not among the categories {categories}")
    if not categories:
        raise ValueError("--boxes: no boxes and no categories; give --categories for an image without findings")
    return categories


def _export_boxes(args: argparse.Namespace, root: Path, case_id: str, image: Any, meta: ImageMeta,
                  prov: dict[str, object]) -> int:
    """--boxes FILE of a 2D image -> COCO annotations.json + images/."""
    import numpy as np

    from napari_medvit.training import export as ex

    if meta.ndim != 2:
        raise ValueError(f"--boxes: COCO export takes 2D images; {args.image} is {meta.ndim}D")
    boxes, classes = _read_boxes(args.boxes, meta.spatial_shape(np.asarray(image).shape))
    categories = _box_categories(args, root, classes)
    path = ex.export_boxes_coco(root, case_id, image, meta, np.asarray(boxes, dtype=float).reshape(-1, 4),
                                categories, [categories.index(c) for c in classes], provenance=prov)
    print(f"exported {len(boxes)} box(es) of image {path.stem} to {root / 'annotations.json'}")
    return 0


def _export_class_label(args: argparse.Namespace, root: Path, case_id: str, image: Any, meta: ImageMeta,
                        tabular: dict[str, float | None] | None, prov: dict[str, object]) -> int:
    """--class-label NAME (and --tabular) -> labels.csv + images/."""
    import csv

    from napari_medvit.training import export as ex

    label = args.class_label.strip()
    if not label:
        raise ValueError("--class-label: give the class name")
    path = ex.export_class_label(root, case_id, label, image=image, meta=meta, tabular=tabular, provenance=prov)
    with path.open(newline="") as f:
        exported = list(csv.DictReader(f))[-1]["case_id"]
    print(f"exported case {exported} (class {label}) to {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    """``medvit export``: every option is checked before the image is read, then the form's step writes."""
    form = _export_form(args)
    prov = _export_provenance(args)
    tabular = _parse_tabular(args.tabular)
    root = _check_dataset_folder(args)
    image, meta = _read_input(args.image, "IMAGE")
    case_id = args.case or _default_case_id(args.image)
    if form == "LABELS":
        return _export_labels(args, root, case_id, image, meta, prov)
    if form == "--boxes":
        return _export_boxes(args, root, case_id, image, meta, prov)
    return _export_class_label(args, root, case_id, image, meta, tabular, prov)
