"""Headless command line: the same code paths as the viewer, without Qt.

    medvit [--debug] COMMAND ...                    # --debug: a traceback with every error message
    medvit models                                   # list registered models
    medvit infer IMAGE -o MASK [--overwrite] [--model transfuse_s] [--checkpoint FILE] [--device auto]
                 [--precision fp32]
    medvit finetune EXPORT_DIR --out RUN_DIR [--model transfuse_s] [--epochs 10] [--resume | --overwrite]
                    [--config KEY=VALUE] [--max-minutes M]  # time budget: stop after the epoch that ends past M minutes
    torchrun --nproc_per_node N -m napari_medvit.cli finetune EXPORT_DIR --out RUN_DIR ...   # data-parallel
    medvit export IMAGE LABELS --dataset DIR [--case ID] [--original MASK] [--labels background,lesion]
                  [--model NAME [--checkpoint FILE]]          # nnU-Net layout: imagesTr/, labelsTr/, dataset.json
    medvit export IMAGE --boxes BOXES.csv|.json --dataset DIR [--categories polyp,adenoma]   # COCO annotations.json
    medvit export IMAGE --class-label NAME [--tabular age=71,sex=1] --dataset DIR            # labels.csv
    medvit synth endoscopy --out DIR --n 300 [--seed 0] [--shape 288 384] [--workers 4]   # synthetic export folders
    medvit synth brain --out DIR --n 40 [--seed 0] [--spacing 2.0]          # FLAIR + T1 + lesion masks
    medvit synth dementia --out DIR --n 300 [--seed 0]                      # DAFT: volumes + tabular rows
    medvit evaluate EXPORT_DIR --model M [--checkpoint FILE]     # the task's metric on every case of a folder
    medvit package RUN_DIR --test EXPORT_DIR --to FILE.safetensors [--overwrite] [--check-fraction 0.2]  # demo weights

IMAGE is anything the plugin reads (NIfTI, DICOM file or series folder, PNG/JPG/TIF frame);
MASK is written as NIfTI with the image's geometry (.nii/.nii.gz) or as PNG (2D images).

Under torchrun every process runs ``finetune`` on its share of each global batch (``--batch-size``
cases per process, so ``N × batch-size`` per step; see :mod:`napari_medvit.training.distributed`);
only rank 0 writes files and prints.

``export`` writes into the folders the viewer's *Export* writes (see
:mod:`napari_medvit.training.export`); nothing is overwritten, an existing case id gets a new
version (``<case>_v2`` ...). Boxes files: CSV with the header ``y0,x0,y1,x1,class`` (pixels, class
by name), or JSON, a list of ``{"y0": .., "x0": .., "y1": .., "x1": .., "class": ".."}``.

Nothing the user owns is overwritten. A file a command writes (``infer -o``, ``package --to``) must
not be, or resolve to (symbolic or hard link), one of the command's inputs, nor lie inside an input
folder (a DICOM series); an existing one is replaced only with ``--overwrite`` (atomically: a new
file is swapped in, a link is replaced, never written through). Its folder must exist and be
writable and its type supported: all checked before a model is built or run. ``synth --out`` must be
a new or empty folder. ``finetune --out`` may be a new folder (made once the inputs are checked: a
refused run leaves none behind) or an empty one; a folder holding a run (epoch checkpoints,
history.json, best.pt, versions/, active.json) needs ``--resume`` (continue it) or ``--overwrite``
(start afresh there; its promoted versions and their numbers are kept), and it must not be the
export folder. ``export`` never overwrites (a new case version).

Exit codes: 0 success; 2 bad input (a missing, unreadable or inconsistent file, a refused output,
a bad option value: ValueError, including the readers' MedVitReadError and CheckpointError, and
OSError), with one line ``medvit COMMAND: <the file and the problem>`` on stderr; 1 an unexpected
error, i.e. a bug (one line pointing at ``--debug``); 130 interrupted (Ctrl-C). A traceback is
printed only with ``--debug`` (before or after the command: ``medvit --debug infer ...``).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_medvit.inference.options import AUGMENTATIONS, DEVICES, PRECISIONS

if TYPE_CHECKING:
    import numpy as np

    from napari_medvit.io import ImageMeta


# -- files the commands write: never an input, never an existing file without --overwrite ----------
def _resolved(path: str | Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` (resolved, links followed) is ``folder`` or lies somewhere below it."""
    p, f = _resolved(path), _resolved(folder)
    return p == f or f in p.parents


def _is_same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)  # symbolic and hard links, case-insensitive file systems
    except OSError:
        return False


def _refuse_inputs(path: str | Path, option: str, inputs: Sequence[tuple[str, str | None]]) -> None:
    """ValueError when ``path`` is, or resolves to, one of ``inputs`` ((what, path)) or lies inside an input folder."""
    for what, given in inputs:
        if not given or not os.path.lexists(given):
            continue
        if os.path.isdir(given):
            if _inside(path, given):
                raise ValueError(f"{option} {path} lies inside the input folder {given} ({what}): writing there "
                                 "would change the input; choose an output outside it")
        elif _is_same_file(path, given) or _resolved(path) == _resolved(given):
            raise ValueError(f"{option} {path} is the input file {given} ({what}): refusing to overwrite an input; "
                             "choose another output file")


def _check_output_file(path: str, option: str, *, suffixes: Sequence[str], overwrite: bool,
                       inputs: Sequence[tuple[str, str | None]] = ()) -> Path:
    """The checks a file named by the user passes before anything is computed (see the module docstring)."""
    out = Path(path)
    _refuse_inputs(out, option, inputs)
    if path.endswith(("/", os.sep)) or out.is_dir():
        raise ValueError(f"{option} {path}: is a folder; give the file to write")
    if not out.name.lower().endswith(tuple(suffixes)):
        raise ValueError(f"{option} {path}: unsupported file type; use {', '.join(suffixes)}")
    if os.path.lexists(out) and not overwrite:
        raise ValueError(f"{option} {path}: the file exists; give --overwrite to replace it")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable")
    return out


def _read_input(path: str, what: str) -> tuple[Any, ImageMeta]:
    """:func:`~napari_medvit.io.read_image` for a file the user named: its only error, MedVitReadError,
    names the file (bad input, exit 2); so does an array the models cannot take."""
    from napari_medvit.io import read_image

    image, meta = read_image(path)
    dtype = getattr(image, "dtype", None)
    if dtype is None or dtype.kind not in "biuf":
        raise ValueError(f"{what} {path}: unsupported voxel type {dtype} (e.g. an RGB24 NIfTI); "
                         "convert it to a numeric image (one channel, or RGB as three)")
    return image, meta


_MASK_SUFFIXES = (".nii.gz", ".nii", ".png")


def _infer(args: argparse.Namespace) -> int:
    out = _check_output_file(args.output, "-o", suffixes=_MASK_SUFFIXES, overwrite=args.overwrite,
                             inputs=[("IMAGE", args.image), ("--checkpoint", args.checkpoint)])
    image, meta = _read_input(args.image, "IMAGE")
    if out.name.lower().endswith(".png") and meta.ndim != 2:
        raise ValueError(f"-o {args.output}: a PNG holds a 2D mask but IMAGE {args.image} is {meta.ndim}D; "
                         "use .nii.gz or .nii")
    lead = image.shape[: image.ndim - meta.ndim - (1 if meta.rgb else 0)]
    if any(n > 1 for n in lead):  # checked before the model runs: one mask file holds one volume
        raise ValueError(f"IMAGE {args.image}: a series of {'x'.join(map(str, lead))} volumes (shape {image.shape}); "
                         "infer writes one mask: give it one volume (e.g. one time point)")

    from napari_medvit.inference import Predictor  # torch: only once the files are known to be right
    from napari_medvit.io import write_nifti_labels, write_png_labels
    from napari_medvit.models import create_model

    model = create_model(args.model, checkpoint=args.checkpoint)
    predictor = Predictor(model, device=args.device, precision=args.precision)

    def report(event: object) -> None:
        if not args.quiet:
            print(f"\r{event}", end="", file=sys.stderr, flush=True)

    try:
        prediction = predictor.predict(image, meta, progress=report)
    except ValueError as exc:  # the model cannot take this image: say which image
        raise ValueError(f"IMAGE {args.image}: {exc}") from exc
    if not args.quiet:
        print(file=sys.stderr)
    _refuse_inputs(out, "-o", [("IMAGE", args.image)])  # still not the input (nothing moved it meanwhile)
    if out.name.lower().endswith((".nii", ".nii.gz")):
        write_nifti_labels(out, prediction.labels, meta)  # both writers swap a finished file in (atomic_write)
    else:
        write_png_labels(out, prediction.labels)
    weights = prediction.provenance["weights"]
    print(f"{out}: {int(prediction.labels.sum())} foreground voxels, {args.model} ({weights}), "
          f"{prediction.provenance['seconds']:.2f} s on {prediction.provenance['device']}")
    return 0


def _parse_config(items: list[str] | None) -> dict[str, object]:
    """``KEY=VALUE`` model configuration overrides; VALUE is read as JSON (``8``, ``[16,32]``, ``true``)
    and kept as text otherwise."""
    import json

    out: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--config {item!r}: expected KEY=VALUE, e.g. channels=[8,16]")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


_RUN_FILES = ("epoch_*.pt", "history.json", "best.pt", "active.json", "versions/v*.safetensors")


def _run_files(folder: Path) -> list[str]:
    """The files of a fine-tuning run in ``folder`` (relative names, sorted)."""
    if not folder.is_dir():
        return []
    return sorted({str(p.relative_to(folder)) for pattern in _RUN_FILES for p in folder.glob(pattern)
                   if not p.name.startswith(".")})


def _check_run_folder(args: argparse.Namespace) -> None:
    """``finetune --out``: a new or empty folder, or a run's folder with --resume (continue) or --overwrite."""
    out = Path(args.out)
    if args.resume and args.overwrite:
        raise ValueError("give --resume (continue the run in --out) or --overwrite (start afresh there), not both")
    if os.path.lexists(out) and not out.is_dir():
        raise ValueError(f"--out {args.out}: not a folder; the run folder must be a folder or a new path")
    if out.is_dir() and Path(args.dataset).is_dir() and _is_same_file(out, args.dataset):
        raise ValueError(f"--out {args.out} is the export folder {args.dataset}; give the run a folder of its own")
    found = _run_files(out)
    if args.resume and not any(f.startswith("epoch_") for f in found):
        what = "does not exist" if not out.exists() else "holds no epoch checkpoint (epoch_NNN.pt)"
        raise ValueError(f"--out {args.out} {what}: nothing to resume; leave out --resume to start a run")
    if found and not (args.resume or args.overwrite):
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise ValueError(f"--out {args.out} holds a fine-tuning run ({shown}); continue it with --resume, or give "
                         "--overwrite to start afresh there (its promoted versions are kept)")


def _finetune(args: argparse.Namespace) -> int:
    from napari_medvit.training.distributed import env_rank
    from napari_medvit.training.finetune import FinetuneConfig, ResumeError, finetune

    _check_run_folder(args)
    cfg = FinetuneConfig(dataset=args.dataset, out_dir=args.out, model=args.model, checkpoint=args.checkpoint,
                         epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, val_fraction=args.val_fraction,
                         seed=args.seed, size=tuple(args.size) if args.size else None, patience=args.patience,
                         augment=args.augment, device=args.device, precision=args.precision, resume=args.resume,
                         max_minutes=args.max_minutes, config_overrides=_parse_config(args.config))
    main = env_rank() == 0  # under torchrun only rank 0 prints (the others yield no events)
    gen = finetune(cfg)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        except ResumeError as exc:
            raise ResumeError(f"{exc} (--overwrite instead of --resume)") from exc
        if event.kind == "note":
            print(f"medvit finetune: note: {event.message}", file=sys.stderr, flush=True)
        elif event.kind == "baseline":
            print(f"base model: validation {event.metric} {event.val_metric:.3f}", flush=True)
        elif event.kind == "epoch":
            print(f"epoch {event.epoch}: train loss {event.train_loss:.4f}, validation {event.metric} "
                  f"{event.val_metric:.3f}", flush=True)
    if main:
        print(result.message)
    return 0


# -- export ------------------------------------------------------------------------------------
_SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")


def _default_case_id(image: str) -> str:
    import re

    name = Path(image.rstrip("/\\")).name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_") or "case"


def _names(text: str, option: str) -> list[str]:
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


def _export(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from napari_medvit.training import export as ex

    forms = [name for name, given in (("LABELS", args.labels_file), ("--boxes", args.boxes),
                                      ("--class-label", args.class_label)) if given is not None]
    if len(forms) != 1:
        raise ValueError("give exactly one of LABELS (a mask file), --boxes FILE or --class-label NAME"
                         + (f"; got {' and '.join(forms)}" if forms else ""))
    for option, value, form in (("--original", args.original, "LABELS"), ("--labels", args.label_names, "LABELS"),
                                ("--categories", args.categories, "--boxes"),
                                ("--tabular", args.tabular, "--class-label")):
        if value is not None and forms[0] != form:
            raise ValueError(f"{option} goes with {form}, not with {forms[0]}")
    prov = _export_provenance(args)
    tabular = _parse_tabular(args.tabular)
    if os.path.lexists(args.dataset) and not Path(args.dataset).is_dir():
        raise ValueError(f"--dataset {args.dataset}: not a folder; give the export folder (created if missing)")
    _refuse_inputs(Path(args.dataset), "--dataset", [("IMAGE", args.image), ("LABELS", args.labels_file),
                                                     ("--original", args.original)])
    image, meta = _read_input(args.image, "IMAGE")
    case_id = args.case or _default_case_id(args.image)
    root = Path(args.dataset)

    if args.labels_file is not None:
        labels = _label_array(args.labels_file, meta, "LABELS")
        original = _label_array(args.original, meta, "--original") if args.original else None
        if args.label_names:
            names = _names(args.label_names, "--labels")
        elif args.model:
            from napari_medvit.models import get_spec

            names = list(get_spec(args.model).class_names)
        elif (root / "dataset.json").is_file():  # the folder's own names keep a dataset consistent
            try:
                known = json.loads((root / "dataset.json").read_text()).get("labels", {})
            except json.JSONDecodeError as exc:
                raise ValueError(f"{root / 'dataset.json'}: not valid JSON ({exc})") from exc
            names = [n for n, _ in sorted(known.items(), key=lambda kv: int(kv[1]))] or ["background", "foreground"]
        else:
            names = ["background", "foreground"]  # the viewer's default for a mask without class names
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

    if args.boxes is not None:
        if meta.ndim != 2:
            raise ValueError(f"--boxes: COCO export takes 2D images; {args.image} is {meta.ndim}D")
        boxes, classes = _read_boxes(args.boxes, meta.spatial_shape(np.asarray(image).shape))
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
        path = ex.export_boxes_coco(root, case_id, image, meta, np.asarray(boxes, dtype=float).reshape(-1, 4),
                                    categories, [categories.index(c) for c in classes], provenance=prov)
        print(f"exported {len(boxes)} box(es) of image {path.stem} to {root / 'annotations.json'}")
        return 0

    import csv

    label = args.class_label.strip()
    if not label:
        raise ValueError("--class-label: give the class name")
    path = ex.export_class_label(root, case_id, label, image=image, meta=meta, tabular=tabular, provenance=prov)
    with path.open(newline="") as f:
        exported = list(csv.DictReader(f))[-1]["case_id"]
    print(f"exported case {exported} (class {label}) to {path}")
    return 0


def _models(_: argparse.Namespace) -> int:
    from napari_medvit.models import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        print(f"{name:20s} {spec.task:9s} {spec.dims}D  {spec.description}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    import json

    from napari_medvit.training.synth import write_synthetic

    options: dict[str, object] = {"shape": tuple(args.shape)} if args.shape else {}
    if args.spacing is not None:
        if args.kind != "brain":
            raise ValueError("--spacing applies to the brain dataset only")
        options["spacing"] = args.spacing
    if args.shape and args.kind != "endoscopy":
        raise ValueError("--shape applies to the endoscopy dataset only")
    out = Path(args.out)
    if os.path.lexists(out) and not (out.is_dir() and not any(out.iterdir())):
        what = "is not a folder" if not out.is_dir() else "is not empty"
        raise ValueError(f"--out {args.out} {what}: synth writes a dataset into a new or empty folder")
    summary = write_synthetic(args.kind, args.out, args.n, args.seed, workers=args.workers, **options)
    print(json.dumps(summary, indent=1))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from napari_medvit.models import create_model
    from napari_medvit.training.package import evaluate_folder

    model = create_model(args.model, checkpoint=args.checkpoint)
    print(json.dumps(evaluate_folder(args.dataset, model, device=args.device, size=args.size), indent=1))
    return 0


def _package(args: argparse.Namespace) -> int:
    import json

    from napari_medvit.training.finetune import active_checkpoint
    from napari_medvit.training.package import package

    run = Path(args.run)  # a run folder (the output may go into it, not over its active version) or a file
    source = active_checkpoint(run) if run.is_dir() else args.run
    _check_output_file(args.to, "--to", suffixes=(".safetensors", ".pt", ".pth"), overwrite=args.overwrite,
                       inputs=[("the version to package", source), ("--test", args.test)])
    test = package(args.run, args.test, args.to, fp16=not args.fp32, description=args.description or "",
                   device=args.device, check_fraction=args.check_fraction)
    print(json.dumps(test, indent=1))
    print(f"wrote {args.to}: test {test['metric']} {test['value']:.3f} on {test['cases']} case(s)")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``medvit infer: <problem> (see medvit infer --help)``), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {' '.join(message.split())} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _fraction(text: str) -> float:
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction in (0, 1]")
    return value


def _open_fraction(text: str) -> float:
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction strictly between 0 and 1")
    return value


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="medvit", description="napari-medvit headless tools; exit codes: 0 done, 2 bad input, "
                     "1 unexpected error (a bug), 130 interrupted")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error (after any command)")
    common = argparse.ArgumentParser(add_help=False)  # --debug also after the command's name
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("infer", parents=[common], help="run a model on an image file and save the mask")
    p.add_argument("image", help="NIfTI / DICOM file or folder / PNG, JPG, TIF frame")
    p.add_argument("-o", "--output", required=True, help="mask file: .nii.gz, .nii or .png (not an input)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--model", default="transfuse_s")
    p.add_argument("--checkpoint", default=None, help=".safetensors/.pt/.pth (default: untrained weights)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_infer)
    f = sub.add_parser("finetune", parents=[common],
                       help="fine-tune a model on an export folder (the viewer's code path; torchrun-able)")
    f.add_argument("dataset", help="export folder (dataset.json + imagesTr/ + labelsTr/, annotations.json or labels.csv)")
    f.add_argument("--out", required=True, help="run folder: epoch checkpoints, versions/, active.json")
    f.add_argument("--model", default="transfuse_s")
    f.add_argument("--checkpoint", default=None, help="base weights (default: untrained)")
    f.add_argument("--epochs", type=_positive_int, default=10)
    f.add_argument("--lr", type=_positive_float, default=None, help="default: the paper's rate for the task")
    f.add_argument("--batch-size", type=_positive_int, default=4, help="cases per step and process (torchrun: N x this per step)")
    f.add_argument("--val-fraction", type=_open_fraction, default=0.25)
    f.add_argument("--seed", type=_non_negative_int, default=0)
    f.add_argument("--size", type=_positive_int, nargs=2, default=None, metavar=("H", "W"))
    f.add_argument("--patience", type=_positive_int, default=5)
    f.add_argument("--augment", default="standard", choices=AUGMENTATIONS)
    f.add_argument("--device", default="cpu", choices=DEVICES)
    f.add_argument("--precision", default="fp32", choices=PRECISIONS)
    f.add_argument("--resume", action="store_true", help="continue after the last epoch checkpoint in --out")
    f.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out folder that holds a run (its promoted versions are kept)")
    f.add_argument("--max-minutes", type=_positive_float, default=None,
                   help="time budget: stop after the epoch that ends past this many minutes of training")
    f.add_argument("--config", action="append", metavar="KEY=VALUE",
                   help="model configuration override (repeatable; VALUE as JSON), e.g. channels=[8,16]")
    f.set_defaults(func=_finetune)
    e = sub.add_parser("export", parents=[common],
                       help="add a corrected mask, boxes or class label to an export folder (the viewer's)")
    e.add_argument("image", help="the image: NIfTI / DICOM file or folder / PNG, JPG, TIF frame")
    e.add_argument("labels_file", nargs="?", default=None, metavar="LABELS",
                   help="label image on the image's grid -> nnU-Net layout (imagesTr/, labelsTr/, dataset.json)")
    e.add_argument("--dataset", required=True, help="export folder (created if missing)")
    e.add_argument("--case", default=None, help="case id (default: the image's file name)")
    e.add_argument("--original", default=None, metavar="MASK",
                   help="the model's mask before correction: Dice/IoU/HD95 against LABELS go into the provenance")
    e.add_argument("--labels", dest="label_names", default=None, metavar="NAMES",
                   help="label names by value, e.g. background,lesion (default: the model's, the folder's, "
                        "or background,foreground)")
    e.add_argument("--model", default=None, help="the model that made the prediction (provenance)")
    e.add_argument("--checkpoint", default=None, help="its checkpoint file (provenance: name and sha256)")
    e.add_argument("--boxes", default=None, metavar="FILE",
                   help="boxes CSV (y0,x0,y1,x1,class) or JSON list -> COCO annotations.json + images/")
    e.add_argument("--categories", default=None, metavar="NAMES",
                   help="COCO category names in order (default: the folder's, or the classes in FILE)")
    e.add_argument("--class-label", default=None, metavar="NAME", help="the image's class -> labels.csv + images/")
    e.add_argument("--tabular", default=None, metavar="K=V,...", help="DAFT tabular row, e.g. age=71,sex=1 "
                   "(an empty value is missing)")
    e.set_defaults(func=_export)
    y = sub.add_parser("synth", parents=[common],
                       help="write a synthetic dataset as export folders (the demo checkpoints' data)")
    y.add_argument("kind", choices=("endoscopy", "brain", "dementia"), help="which generator")
    y.add_argument("--out", required=True, help="a new or empty folder")
    y.add_argument("--n", type=_positive_int, required=True, help="number of cases")
    y.add_argument("--seed", type=_non_negative_int, default=0, help="the cases' seeds are drawn from it")
    y.add_argument("--shape", type=_positive_int, nargs=2, default=None, metavar=("H", "W"), help="frame size (endoscopy)")
    y.add_argument("--spacing", type=float, default=None, help="voxel size in mm (brain; default 2.0)")
    y.add_argument("--workers", type=_positive_int, default=1, help="generate the cases in this many processes (same data)")
    y.set_defaults(func=_synth)
    v = sub.add_parser("evaluate", parents=[common],
                       help="score a model on every case of an export folder (the task's metric)")
    v.add_argument("dataset", help="export folder")
    v.add_argument("--model", required=True)
    v.add_argument("--checkpoint", default=None)
    v.add_argument("--size", type=_positive_int, nargs="+", default=None, help="input size (default: the model's)")
    v.add_argument("--device", default="cpu", choices=DEVICES)
    v.set_defaults(func=_evaluate)
    k = sub.add_parser("package", parents=[common],
                       help="a fine-tuning run's active version -> demo checkpoint with its test metric")
    k.add_argument("run", help="run folder (its active version) or a checkpoint file")
    k.add_argument("--test", required=True, help="held-out export folder: its metric goes into the manifest")
    k.add_argument("--to", required=True, help="output .safetensors (its folder must exist)")
    k.add_argument("--overwrite", action="store_true", help="replace an existing --to file")
    k.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16 storage)")
    k.add_argument("--description", default=None, help="the manifest's one-line description (shown in the viewer)")
    k.add_argument("--device", default="cpu", choices=DEVICES)
    k.add_argument("--check-fraction", type=_fraction, default=None,
                   help="also record the metric on this fixed share of the test cases (for quick re-checks)")
    k.set_defaults(func=_package)
    m = sub.add_parser("models", parents=[common], help="list the registered models")
    m.set_defaults(func=_models)
    return parser


EXIT_OK, EXIT_BUG, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _one_line(text: str, limit: int = 2000) -> str:
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _describe(exc: BaseException) -> tuple[int, str]:
    """(exit code, message) of an exception that ended a command; see the module docstring."""
    import json

    if isinstance(exc, json.JSONDecodeError):  # a JSON file not caught where it was read: no name to give
        return EXIT_BAD_INPUT, f"a file is not valid JSON ({exc}); --debug shows which one was read"
    if isinstance(exc, ValueError):  # bad input; ours (and the readers') name the file and the problem
        return EXIT_BAD_INPUT, _one_line(str(exc) or type(exc).__name__)
    if isinstance(exc, OSError):
        name = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        text = exc.strerror or str(exc) or type(exc).__name__
        return EXIT_BAD_INPUT, _one_line(f"{name}: {text}" if name else text)
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # also torch's (CUDA) one
        return EXIT_BAD_INPUT, _one_line(f"out of memory ({exc}); try a smaller --batch-size or --size, or "
                                         "another --device")
    return EXIT_BUG, _one_line(f"unexpected error ({type(exc).__name__}: {exc}); this is a bug, not a problem "
                               "with the input as far as the program knows: rerun with --debug for the traceback "
                               "and report it")


def _interrupted(args: argparse.Namespace) -> str:
    kept = [f for f in _run_files(Path(args.out)) if f.startswith("epoch_")] if args.command == "finetune" else []
    return f"interrupted; {kept[-1]} in {args.out} is kept: continue with --resume" if kept else "interrupted"


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (see the module docstring): errors are one line on stderr."""
    import traceback

    args = build_parser().parse_args(argv)
    if not args.debug:  # warnings as one line each, without the source line Python adds
        warnings.formatwarning = lambda message, *_, **__: f"medvit {args.command}: warning: {message}\n"
    try:
        return int(args.func(args))
    except (KeyboardInterrupt, Exception) as exc:
        code, message = (EXIT_INTERRUPTED, _interrupted(args)) if isinstance(exc, KeyboardInterrupt) else _describe(exc)
        if args.debug:
            traceback.print_exc()
        print(f"medvit {args.command}: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
