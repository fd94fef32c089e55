"""Score a model on a held-out export folder, and package a fine-tuning run's version as demo weights.

:func:`evaluate_folder` scores every case of an export folder with the task's validation metric
(the fine-tuning task of the model's kind: Dice, balanced accuracy, AP50), prepared exactly as in
fine-tuning. :func:`package` turns a run's active version into a shipped checkpoint
(``sample_data/checkpoints``): weights stored in fp16 (half the size), the manifest marked as
demo weights trained on synthetic data, and the held-out metric measured on the fp16-rounded
weights, i.e. on exactly what a user loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from napari_medvit.inference import resolve_device
from napari_medvit.models import create_model
from napari_medvit.models.checkpoint import Manifest, save_checkpoint
from napari_medvit.models.manifest import read_manifest
from napari_medvit.training.tasks import make_task

DEMO_NOTE = "DEMO weights trained on synthetic data only; not for clinical use"


def evaluate_folder(dataset: str | Path, model: torch.nn.Module, *, device: str = "cpu",
                    size: tuple[int, ...] | None = None, fraction: float = 1.0) -> dict[str, Any]:
    """The task's metric of ``model`` on every case of ``dataset`` (no training split); with ``fraction`` < 1
    on the fixed, seeded share of the cases that fine-tuning's split would validate on (the same ids always
    give the same share: how a test re-checks a recorded figure on a few cases). The model is moved to
    ``device``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    target = resolve_device(device)
    model = model.to(target)
    task = make_task(dataset, model, target, val_fraction=fraction, seed=0,
                     size=tuple(size) if size else None, augment="none")
    value = float(task.evaluate(model))
    out: dict[str, Any] = {"metric": task.metric, "value": value, "cases": len(task.val_ids),
                           "dataset": str(dataset),
                           **({"fraction": fraction, "case_ids": list(task.val_ids)} if fraction < 1 else {})}
    for name in ("accuracy", "per_class"):  # classification's plain accuracy, detection's per-class AP50
        extra = getattr(task, name, None)
        if extra is not None and extra != {}:
            out[name] = extra
    return out


def _version(run_or_checkpoint: str | Path) -> Path:
    from napari_medvit.training.finetune import active_checkpoint

    path = Path(run_or_checkpoint)
    if path.is_dir():
        active = active_checkpoint(path)
        if active is None:
            raise ValueError(f"{path}: no active.json — the run promoted no version (nothing beat the base model)")
        return Path(active)
    if not path.is_file():
        raise ValueError(f"{path}: no such run folder or checkpoint")
    return path


def package(run_or_checkpoint: str | Path, test_dataset: str | Path, to: str | Path, *, fp16: bool = True,
            description: str = "", device: str = "cpu", check_fraction: float | None = None) -> dict[str, Any]:
    """Write the run's active version (or a checkpoint file) to ``to`` as demo weights; returns the test record.

    ``check_fraction``: also record the metric on that fixed share of the test cases (``test["check"]``),
    so that a quick test can re-check the weights on a few regenerated cases instead of all."""
    source = _version(run_or_checkpoint)
    manifest = read_manifest(source)
    if manifest is None:
        raise ValueError(f"{source}: not a checkpoint written by napari-medvit (no manifest)")
    model = create_model(manifest.arch, checkpoint=source)
    if fp16:  # score exactly what a user loads: the fp16-rounded weights
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())
    size = (manifest.extra or {}).get("size")
    test = evaluate_folder(test_dataset, model, device=device, size=size)
    test["weights"] = "fp16" if fp16 else "fp32"
    if check_fraction is not None and check_fraction < 1:
        check = evaluate_folder(test_dataset, model, device=device, size=size, fraction=check_fraction)
        test["check"] = {k: check[k] for k in ("metric", "value", "cases", "fraction", "case_ids")}
    from napari_medvit.training.synth import synth_recipe

    recipe = synth_recipe(test_dataset)
    if recipe is not None:  # the test set can be regenerated exactly (the tests check the recorded figure)
        test["synthetic"] = recipe
        test["dataset"] = (Path(test_dataset).name if not recipe["part"]
                           else f"{recipe['part']} of synthetic {recipe['kind']}")
    extra = dict(manifest.extra or {})
    extra.update({"demo": True, "note": DEMO_NOTE, "test": test, "source_version": str(source)})
    text = description or f"DEMO, synthetic data, not for clinical use; test {test['metric']} {test['value']:.3f}"
    packed = Manifest(arch=manifest.arch, config=manifest.config, class_names=list(manifest.class_names),
                      preprocessing=dict(manifest.preprocessing), trained=True, description=text, extra=extra)
    Path(to).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, to, packed, dtype=torch.float16 if fp16 else None)
    return test
