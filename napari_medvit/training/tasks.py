"""What the fine-tuning loop needs from a task kind: data, loss, validation metric, optimiser.

A :class:`Task` holds one export folder's cases, already split (fixed seed) into training and
validation, and knows how to

- build a training batch from case indices (``batch``), with augmentation when asked;
- compute the paper's loss for that batch (``loss``);
- score a model on the validation cases (``evaluate``), higher is better, named by ``metric``;
- make the optimiser of the official training script (``optimizer``) and its gradient clip norm.

:func:`make_task` picks the task from the model's registry entry and the export folder's layout:

========================  ==============================  ==========================================
model task                export layout                   module
========================  ==============================  ==========================================
segment, 2D (TransFuse)   dataset.json + PNG imagesTr     :mod:`napari_medvit.training.seg2d`
segment, 3D (MONAI nets)  dataset.json + NIfTI imagesTr   :mod:`napari_medvit.training.seg3d`
classify (CrossViT, timm, labels.csv + images/            :mod:`napari_medvit.training.classify`
DAFT with tabular rows,
its image-only 3D ResNet)
detect (SMCA-DETR)        annotations.json (COCO)         :mod:`napari_medvit.training.detection`
========================  ==============================  ==========================================

An nnU-Net folder (the segmentation tasks) must agree with its ``dataset.json``
(:func:`nnunet_cases`): the cases are the label files ``labelsTr/<case><ending>``; each needs its
image file(s) ``imagesTr/<case>_0000<ending>`` ...; ``numTraining``, when given, must equal the
number of label files, and a ``training`` list (nnU-Net v1 / MSD), when given, must name exactly
those cases and existing files. Any disagreement stops with a ValueError naming ``dataset.json``
(or the folder) and the discrepancy, before a model is trained. An image without labels is no
case (an export interrupted before it wrote the labels leaves one) and is not used.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medvit.inference.options import AUGMENTATIONS
from napari_medvit.models.adapters import load_adapter
from napari_medvit.models.config import config_of


def read_json(path: Path) -> Any:
    """The content of a JSON file the user's folder holds; a ValueError naming the file when it is not JSON."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text (JSON) file ({exc.reason} at byte {exc.start})") from exc


def read_dataset_json(root: Path) -> dict[str, Any]:
    """``root/dataset.json`` as a dict (ValueError naming the file: missing, not JSON, not an object)."""
    path = root / "dataset.json"
    if not path.is_file():
        raise ValueError(f"{root}: no dataset.json — export corrected masks into this folder first")
    info = read_json(path)
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object (nnU-Net dataset.json), got a {type(info).__name__}")
    return info


def _listed(names: Sequence[str], most: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def nnunet_cases(root: Path, info: dict[str, Any], ending: str, n_files: int) -> list[str]:
    """The case ids of an nnU-Net export folder (its label files, sorted), checked against ``dataset.json``
    and the image files (see the module docstring): ``n_files`` images per case (``_0000`` ...)."""
    from napari_medvit.io import finished_files

    path = root / "dataset.json"
    label_files = finished_files(root / "labelsTr", f"*{ending}")
    cases = [p.name[: -len(ending)] for p in label_files]
    for case in cases:
        for c in range(n_files):
            image_file = root / "imagesTr" / f"{case}_{c:04d}{ending}"
            if not image_file.is_file():
                raise ValueError(f"{root}: case {case} has labels but no image {image_file.name} in imagesTr "
                                 f"(the folder's files disagree with each other); export the case again or remove "
                                 f"labelsTr/{case}{ending}")
    stated = info.get("numTraining")
    if stated is not None:
        if isinstance(stated, bool) or not isinstance(stated, int):
            raise ValueError(f"{path}: numTraining {stated!r} is not a whole number")
        if stated != len(cases):
            raise ValueError(f"{path}: numTraining is {stated} but labelsTr holds {len(cases)} labelled case(s)"
                             + (f" ({_listed(cases)})" if cases else "")
                             + "; the folder and its dataset.json disagree: restore the missing cases or correct "
                               "numTraining")
    training = info.get("training")
    if training is not None:
        if not isinstance(training, list) or not all(isinstance(t, dict) for t in training):
            raise ValueError(f"{path}: 'training' must be a list of {{\"image\": ..., \"label\": ...}} entries")
        listed = []
        for n, entry in enumerate(training, start=1):
            label = str(entry.get("label") or "")
            if not label or not (root / label).is_file():
                raise ValueError(f"{path}: training entry {n} names the label file {label!r}, which does not exist")
            image = str(entry.get("image") or "")
            name = Path(image).name
            stem = name[: -len(ending)] if name.endswith(ending) else name
            channel_files = [root / Path(image).parent / f"{stem}_{c:04d}{ending}" for c in range(n_files)]
            if not image or not ((root / image).is_file() or all(f.is_file() for f in channel_files)):
                raise ValueError(f"{path}: training entry {n} names the image {image!r}, which does not exist")
            listed.append(Path(label).name[: -len(ending)] if label.endswith(ending) else Path(label).stem)
        if sorted(listed) != sorted(cases):
            missing, extra = sorted(set(cases) - set(listed)), sorted(set(listed) - set(cases))
            twice = sorted({c for c in listed if listed.count(c) > 1})
            raise ValueError(f"{path}: its 'training' list and labelsTr disagree"
                             + (f"; labelled but not listed: {_listed(missing)}" if missing else "")
                             + (f"; listed but not labelled in labelsTr: {_listed(extra)}" if extra else "")
                             + (f"; listed more than once: {_listed(twice)}" if twice else ""))
    return cases


def split(case_ids: list[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A fixed, seeded split: the same ids and seed always give the same validation cases.

    ``val_fraction`` 1.0 makes every case a validation case (no training cases): how a model is
    scored on a held-out test folder (:func:`napari_medvit.training.finetune.evaluate_folder`)."""
    if val_fraction >= 1.0:
        if not case_ids:
            raise ValueError("no cases to evaluate")
        return [], list(range(len(case_ids)))
    if len(case_ids) < 2:
        raise ValueError(f"{len(case_ids)} case(s); fine-tuning needs at least 2 (training and validation)")
    order = np.random.default_rng(seed).permutation(len(case_ids))
    n_val = min(max(1, int(round(len(case_ids) * val_fraction))), len(case_ids) - 1)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def class_names_for(labels: Sequence[str], base_names: Sequence[str]) -> list[str]:
    """The base model's names when they hold every label (their order kept), else the sorted labels."""
    present = sorted(set(labels))
    if base_names and set(present) <= set(base_names):
        return list(base_names)
    return present


def base_class_names(model: torch.nn.Module) -> list[str]:
    """The class names of a model's head from its resolved configuration (the checkpoint manifest's, else
    the registry's); none for a freshly initialised head (``create_model(new_head=True)``: the data's
    classes define it)."""
    return list(config_of(model).class_names)


def class_count_override(labels: Sequence[str], spec: Any, base_names: Sequence[str]) -> dict[str, Any]:
    """``{n: number of classes}`` with ``n`` the family's class-count argument (its adapter's
    ``class_count_arg``), unless the base names (default the registry's) already hold every label;
    then nothing (the factory's default, or a checkpoint's own configuration, decides)."""
    base = list(base_names or spec.class_names)
    names = class_names_for(labels, base)
    if base and names == base:
        return {}
    arg = load_adapter(spec.adapter).class_count_arg
    if arg is None:
        raise ValueError(f"{spec.name} has no class-count argument: its classes cannot follow the data's")
    return {arg: len(names)}


class Task:
    """Base class; see the module docstring. Subclasses set ``metric`` and fill the id lists."""

    metric: str = "metric"
    default_lr: float = 1e-4
    clip_norm: float | None = None

    def __init__(self, dataset: str | Path, model: torch.nn.Module, device: torch.device, *,
                 val_fraction: float, seed: int, size: tuple[int, ...] | None, augment: str) -> None:
        if augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {augment!r}; choose one of {AUGMENTATIONS}")
        self.dataset = Path(dataset)
        self.device = device
        self.augment = augment
        self.config = config_of(model)  # preprocessing, class names, the family's adapter
        self.spec = self.config.spec
        self.train_ids: list[str] = []
        self.val_ids: list[str] = []
        self.class_names: list[str] | None = None  # set when the data defines the classes (manifest)
        self.preprocessing: dict[str, Any] = {}  # what the predictor must do differently (manifest, over the base's)

    @classmethod
    def model_overrides(cls, dataset: str | Path, spec: Any, base_names: Sequence[str] = ()) -> dict[str, Any]:
        """Configuration the data imposes on the model (e.g. the number of classes); the user's win.

        ``base_names``: the class names of the base model's head (its checkpoint's, else the
        registry's). A non-empty answer for a model loaded from a checkpoint means that the data
        needs another head (:func:`~napari_medvit.models.create_model` with ``new_head=True``)."""
        return {}

    @property
    def n_train(self) -> int:
        return len(self.train_ids)

    def batch(self, idx: list[int], gen: torch.Generator) -> Any:
        """A training batch (on the task's device) of the training cases ``idx``."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> float:
        """The validation metric of ``model`` on the validation cases (higher is better)."""
        raise NotImplementedError

    def optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)

    def summary(self) -> dict[str, Any]:
        """What the version manifest records about the data."""
        return {"dataset": str(self.dataset), "train_cases": list(self.train_ids), "val_cases": list(self.val_ids)}


class MethodDispatch(torch.nn.Module):
    """Routes ``forward(*args, _method=name)`` to ``module.<name>(*args)``.

    DistributedDataParallel synchronises gradients only for calls through its own ``forward``; a
    task that needs another method (TransFuse's ``forward_all`` with the auxiliary heads, SMCA's
    ``forward_all`` with the auxiliary decoder layers) goes through :func:`call` so that the same
    task code runs on a plain model and on a DDP-wrapped ``MethodDispatch``.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, _method: str = "forward", **kwargs: Any) -> Any:
        return getattr(self.module, _method)(*args, **kwargs)


def call(model: torch.nn.Module, method: str, *args: Any, **kwargs: Any) -> Any:
    """``model.<method>(*args)``, or through DDP's forward when ``model`` wraps a :class:`MethodDispatch`."""
    inner = getattr(model, "module", None)
    if isinstance(inner, MethodDispatch):
        return model(*args, _method=method, **kwargs)
    if isinstance(model, MethodDispatch):
        return model(*args, _method=method, **kwargs)
    return getattr(model, method)(*args, **kwargs)


# (registry task, dims or None for any) -> module holding the Task subclass named ``TASK``
_TASKS = {
    ("segment", 2): "napari_medvit.training.seg2d",
    ("segment", 3): "napari_medvit.training.seg3d",
    ("classify", None): "napari_medvit.training.classify",
    ("detect", None): "napari_medvit.training.detection",
}


def task_class(spec: Any) -> type[Task]:
    module = _TASKS.get((spec.task, spec.dims)) or _TASKS.get((spec.task, None))
    if module is None:
        raise ValueError(f"fine-tuning is not available for {spec.name} ({spec.task}, {spec.dims}D)")
    task = getattr(importlib.import_module(module), "TASK", None)
    if task is None:
        raise ValueError(f"fine-tuning {spec.name} ({spec.task}) is not available yet")
    return task


def make_task(dataset: str | Path, model: torch.nn.Module, device: torch.device, **kwargs: Any) -> Task:
    return task_class(model.medvit_spec)(dataset, model, device, **kwargs)
