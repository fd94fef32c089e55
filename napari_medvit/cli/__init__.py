"""Headless command line: the same code paths as the viewer, without Qt.

    medvit [--debug] COMMAND ...                    # --debug: a traceback with every error message
    medvit models                                   # list registered models
    medvit infer IMAGE -o MASK [--overwrite] [--model NAME] [--checkpoint FILE | --untrained] [--device auto]
                 [--precision fp32]   # default: the best TransFuse with weights here (yours, else the demo's)
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
    medvit evaluate EXPORT_DIR --model M [--checkpoint FILE | --untrained]  # the task's metric on every case
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
import sys
import warnings
from pathlib import Path
from typing import Any

from napari_medvit.cli._commands import _evaluate, _finetune, _infer, _models, _package, _run_files, _synth
from napari_medvit.cli._export import _export
from napari_medvit.inference.options import AUGMENTATIONS, DEVICES, PRECISIONS

__all__ = ["EXIT_BAD_INPUT", "EXIT_BUG", "EXIT_INTERRUPTED", "EXIT_OK", "build_parser", "main"]


# -- argument parsing (the commands' functions are looked up here, so that tests can patch them) ----
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``medvit infer: <problem> (see medvit infer --help)``), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {' '.join(message.split())} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(text, float)
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _fraction(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction in (0, 1]")
    return value


def _open_fraction(text: str) -> float:
    """argparse type: a number in (0, 1)."""
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction strictly between 0 and 1")
    return value


def _number(text: str, kind: type) -> Any:
    """``kind(text)``, or an argparse error saying the text is not a (whole) number."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``medvit`` parser: one sub-command per command, each with its function in ``func``."""
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
    p.add_argument("--model", default=None,
                   help="registered model (default: the best TransFuse with weights here: yours, else the demo's)")
    p.add_argument("--checkpoint", default=None,
                   help=".safetensors/.pt/.pth (default: the model's weights in your weights folder, else shipped)")
    p.add_argument("--untrained", action="store_true", help="run random weights on purpose (prints a warning)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_infer)
    f = sub.add_parser("finetune", parents=[common],
                       help="fine-tune a model on an export folder (the viewer's code path; torchrun-able)")
    f.add_argument("dataset",
                   help="export folder (dataset.json + imagesTr/ + labelsTr/, annotations.json or labels.csv)")
    f.add_argument("--out", required=True, help="run folder: epoch checkpoints, versions/, active.json")
    f.add_argument("--model", default="transfuse_s")
    f.add_argument("--checkpoint", default=None, help="base weights (default: untrained)")
    f.add_argument("--epochs", type=_positive_int, default=10)
    f.add_argument("--lr", type=_positive_float, default=None, help="default: the paper's rate for the task")
    f.add_argument("--batch-size", type=_positive_int, default=4,
                   help="cases per step and process (torchrun: N x this per step)")
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
    y.add_argument("--shape", type=_positive_int, nargs=2, default=None, metavar=("H", "W"),
                   help="frame size (endoscopy)")
    y.add_argument("--spacing", type=float, default=None, help="voxel size in mm (brain; default 2.0)")
    y.add_argument("--workers", type=_positive_int, default=1,
                   help="generate the cases in this many processes (same data)")
    y.set_defaults(func=_synth)
    v = sub.add_parser("evaluate", parents=[common],
                       help="score a model on every case of an export folder (the task's metric)")
    v.add_argument("dataset", help="export folder")
    v.add_argument("--model", required=True)
    v.add_argument("--checkpoint", default=None,
                   help="default: the model's weights in your weights folder, else shipped")
    v.add_argument("--untrained", action="store_true", help="score random weights on purpose (prints a warning)")
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
    """``text`` on one line, at most ``limit`` characters."""
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
    """The message of an interrupted command (a fine-tuning run says which checkpoint is kept)."""
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
