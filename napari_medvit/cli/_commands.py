"""The ``medvit`` commands other than ``export`` (:mod:`napari_medvit.cli._export`): ``infer``,
``finetune``, ``models``, ``synth``, ``evaluate`` and ``package``. Heavy modules (torch) are imported
only once a command's files have been checked."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from napari_medvit.cli._files import _check_output_file, _is_same_file, _read_input, _refuse_inputs

_MASK_SUFFIXES = (".nii.gz", ".nii", ".png")


def _choose_weights(args: argparse.Namespace) -> tuple[str, str | None]:
    """(model, checkpoint) as the viewer chooses them: ``--checkpoint`` when given; else the model's own
    weights (the user's weights folder, then the shipped ones; without ``--model`` the best TransFuse the
    installation has); untrained only with ``--untrained``, with a warning. ValueError when a model has none."""
    from napari_medvit.models.weights import ONE_CLICK_TRANSFUSE, best_weights, default_weights, user_weights_dir

    untrained = getattr(args, "untrained", False)
    if args.checkpoint and untrained:
        raise ValueError("--untrained runs random weights: it cannot be combined with --checkpoint")
    if args.checkpoint:
        # a file without a manifest (e.g. the official TransFuse-S .pth) is read as the reference TransFuse-S
        return args.model or _checkpoint_arch(args.checkpoint) or "transfuse_s", args.checkpoint
    if untrained:
        model = args.model or "transfuse_s"
        print(f"medvit: warning: {model} runs with UNTRAINED (random) weights: its output shows no learned "
              "content", file=sys.stderr)
        return model, None
    weights = default_weights(args.model) if args.model else best_weights()
    if weights is None:
        from napari_medvit.models import list_models
        from napari_medvit.models.manifest import bundled_checkpoints

        shipped = [n for n in list_models(include_test=False) if bundled_checkpoints(n)]
        raise ValueError(f"--model {args.model or ', '.join(ONE_CLICK_TRANSFUSE)}: no weights on this machine; "
                         f"give --checkpoint FILE (or put a .safetensors checkpoint in {user_weights_dir()}), "
                         f"choose a model with shipped weights ({', '.join(shipped)}), or run random weights "
                         "with --untrained")
    if not getattr(args, "quiet", False):
        print(f"medvit: {weights.model} with {weights.label} ({weights.path.name})", file=sys.stderr)
    return weights.model, str(weights.path)


def _checkpoint_arch(checkpoint: str) -> str | None:
    """The model a .safetensors checkpoint's manifest names (None for other files)."""
    if not str(checkpoint).endswith(".safetensors"):
        return None
    from napari_medvit.models.manifest import read_manifest

    manifest = read_manifest(checkpoint)
    return manifest.arch if manifest is not None else None


def _infer(args: argparse.Namespace) -> int:
    """``medvit infer``: the files are checked before the model is built, the mask is written atomically."""
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

    name, checkpoint = _choose_weights(args)
    model = create_model(name, checkpoint=checkpoint)
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
    print(f"{out}: {int(prediction.labels.sum())} foreground voxels, {name} ({weights}), "
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
    """``medvit finetune``: the viewer's fine-tuning loop, its events printed (rank 0 only under torchrun)."""
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


def _models(_: argparse.Namespace) -> int:
    """``medvit models``: one line per registered model."""
    from napari_medvit.models import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        print(f"{name:20s} {spec.task:9s} {spec.dims}D  {spec.description}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    """``medvit synth``: a synthetic dataset written as export folders into a new or empty folder."""
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
    """``medvit evaluate``: the task's metric of a model on every case of an export folder (JSON)."""
    import json

    from napari_medvit.models import create_model
    from napari_medvit.training.package import evaluate_folder

    name, checkpoint = _choose_weights(args)
    model = create_model(name, checkpoint=checkpoint)
    print(json.dumps(evaluate_folder(args.dataset, model, device=args.device, size=args.size), indent=1))
    return 0


def _package(args: argparse.Namespace) -> int:
    """``medvit package``: a run's active version as a demo checkpoint with its held-out metric."""
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
