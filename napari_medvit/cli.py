"""Headless command line: the same code paths as the viewer, without Qt.

    medvit models                                   # list registered models
    medvit finetune EXPORT_DIR --out RUN_DIR [--model transfuse_s] [--epochs 10] [--resume]
    medvit infer IMAGE -o MASK [--model transfuse_s] [--checkpoint FILE] [--device auto] [--precision fp32]

IMAGE is anything the plugin reads (NIfTI, DICOM file or series folder, PNG/JPG/TIF frame);
MASK is written as NIfTI with the image's geometry (.nii/.nii.gz) or as PNG (2D images).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_medvit.inference.options import AUGMENTATIONS, DEVICES, PRECISIONS


def _infer(args: argparse.Namespace) -> int:
    from napari_medvit.inference import Predictor
    from napari_medvit.io import read_image, write_nifti_labels, write_png_labels
    from napari_medvit.models import create_model

    image, meta = read_image(args.image)
    model = create_model(args.model, checkpoint=args.checkpoint)
    predictor = Predictor(model, device=args.device, precision=args.precision)

    def report(event: object) -> None:
        if not args.quiet:
            print(f"\r{event}", end="", file=sys.stderr, flush=True)

    prediction = predictor.predict(image, meta, progress=report)
    if not args.quiet:
        print(file=sys.stderr)
    out = Path(args.output)
    if out.name.endswith((".nii", ".nii.gz")):
        write_nifti_labels(out, prediction.labels, meta)
    elif out.suffix == ".png":
        write_png_labels(out, prediction.labels)
    else:
        raise SystemExit(f"medvit infer: unsupported output {out.name!r}; use .nii.gz, .nii or .png")
    weights = prediction.provenance["weights"]
    print(f"{out}: {int(prediction.labels.sum())} foreground voxels, {args.model} ({weights}), "
          f"{prediction.provenance['seconds']:.2f} s on {prediction.provenance['device']}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from napari_medvit.training.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(dataset=args.dataset, out_dir=args.out, model=args.model, checkpoint=args.checkpoint,
                         epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, val_fraction=args.val_fraction,
                         seed=args.seed, size=tuple(args.size) if args.size else None, patience=args.patience,
                         augment=args.augment, device=args.device, precision=args.precision, resume=args.resume)
    gen = finetune(cfg)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        if event.kind == "baseline":
            print(f"base model: validation {event.metric} {event.val_metric:.3f}")
        elif event.kind == "epoch":
            print(f"epoch {event.epoch}: train loss {event.train_loss:.4f}, validation {event.metric} "
                  f"{event.val_metric:.3f}")
    print(result.message)
    return 0


def _models(_: argparse.Namespace) -> int:
    from napari_medvit.models import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        print(f"{name:20s} {spec.task:9s} {spec.dims}D  {spec.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medvit", description="napari-medvit headless tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("infer", help="run a model on an image file and save the mask")
    p.add_argument("image", help="NIfTI / DICOM file or folder / PNG, JPG, TIF frame")
    p.add_argument("-o", "--output", required=True, help="mask file: .nii.gz, .nii or .png")
    p.add_argument("--model", default="transfuse_s")
    p.add_argument("--checkpoint", default=None, help=".safetensors/.pt/.pth (default: untrained weights)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_infer)
    f = sub.add_parser("finetune", help="fine-tune a 2D segmentation model on an export folder (the viewer's code path)")
    f.add_argument("dataset", help="export folder (dataset.json, imagesTr/, labelsTr/)")
    f.add_argument("--out", required=True, help="run folder: epoch checkpoints, versions/, active.json")
    f.add_argument("--model", default="transfuse_s")
    f.add_argument("--checkpoint", default=None, help="base weights (default: untrained)")
    f.add_argument("--epochs", type=int, default=10)
    f.add_argument("--lr", type=float, default=None, help="default: the paper's rate for the task")
    f.add_argument("--batch-size", type=int, default=4)
    f.add_argument("--val-fraction", type=float, default=0.25)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    f.add_argument("--patience", type=int, default=5)
    f.add_argument("--augment", default="standard", choices=AUGMENTATIONS)
    f.add_argument("--device", default="cpu", choices=DEVICES)
    f.add_argument("--precision", default="fp32", choices=PRECISIONS)
    f.add_argument("--resume", action="store_true", help="continue after the last epoch checkpoint in --out")
    f.set_defaults(func=_finetune)
    m = sub.add_parser("models", help="list the registered models")
    m.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:  # bad input: a clear message, no traceback
        print(f"medvit {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
