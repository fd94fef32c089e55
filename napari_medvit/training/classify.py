"""Fine-tuning task for classification: CrossViT, the timm baselines (ResNet-34/50, DeiT-S), DAFT and
its image-only 3D ResNet baseline.

Data: a ``labels.csv`` export folder (:func:`napari_medvit.training.export.export_class_label`):
columns ``case_id``, ``label``, ``image`` (path of the image relative to the folder), optional
tabular columns (DAFT's variables; empty = missing) and ``provenance``. A row without an image
cannot be trained on and raises ValueError naming the case.

Classes: the sorted set of labels, unless the base model's class names (its checkpoint manifest's,
else the registry's, e.g. DAFT's CN / MCI / Dementia) contain them all; then those names in their
order, so that a fine-tuned model keeps the base model's class indices.
:meth:`ClassifyTask.model_overrides` gives the factory the matching number of outputs
(``num_classes`` for timm's CrossViT and baselines, ``n_outputs`` for DAFT and the 3D ResNet).

Inputs are prepared by the one input pipeline the predictor uses (:mod:`napari_medvit.transforms.prepare`):

- 2D (CrossViT, timm): ``scale_to_unit`` (8-bit / RGB frames divided by their type's maximum),
  alpha dropped, grey replicated to RGB, normalised with the registry's mean/std, resized
  bilinearly (antialiased) to the model's ``resize``; augmentation with
  :func:`~napari_medvit.transforms.augment.augment_2d`.
- 3D (DAFT, the image-only 3D ResNet): the volume robustly scaled to 0..1 (``scale_to_unit``) and
  resampled trilinearly to ``resize3d`` (64^3). Augmentation: ``"flips"`` flips each of the three
  axes with probability 0.5; ``"standard"`` adds MONAI's ``RandScaleIntensity(0.1)`` and
  ``RandShiftIntensity(0.1)`` (as in MONAI's BraTS recipes), all seeded from the batch's
  ``torch.Generator``. Batches are ``(volume, y)``, or ``(volume, tabular, y)`` for a model with
  tabular inputs (DAFT).
- tabular (DAFT): the row encoded by :func:`~napari_medvit.transforms.tabular_vector` with the base
  model's feature list (the checkpoint manifest's, else the registry's ADNI list): a missing value
  enters as its (standardised) mean with its missing-value indicator set, as at inference. The 3D
  ResNet ignores the tabular columns of ``labels.csv``.

Loss: cross-entropy. CrossViT's official recipe (DeiT's) trains with mixup/cutmix and label
smoothing 0.1; without mixup we keep its label smoothing 0.1 for CrossViT, plain cross-entropy for
the timm baselines and for the 3D models (the official DAFT script uses ``CrossEntropyLoss``; for two
classes it switches to one output with BCE, we keep a softmax over two outputs, which is what the
predictor reads).

Optimiser: AdamW as in the official recipes. CrossViT/DeiT use lr 5e-4 x batch / 512 with weight
decay 0.05 for training from scratch over 300 epochs at batch 1024; at the small batches of
fine-tuning that rule gives ~4e-6, far too little to move a model in a few epochs, so the default
here is 1e-4 (the usual ViT/CNN fine-tuning rate) with weight decay 0.05, not applied to biases and
normalisation weights (timm's rule for one-dimensional parameters). DAFT and the 3D ResNet: AdamW
with the official ADNI script's lr 0.013 and weight decay 0 (the official code trains its image-only
``resnet`` with the same script).

Validation metric: balanced accuracy (mean recall over the classes present in the validation
labels, as ``sklearn.metrics.balanced_accuracy_score`` and DAFT's ``BalancedAccuracy``); plain
accuracy is kept beside it (:attr:`ClassifyTask.accuracy`, and in :meth:`ClassifyTask.summary`).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medvit.io import read_image
from napari_medvit.training.tasks import (  # class_names_for: public here too
    Task,
    base_class_names,
    class_count_override,
    class_names_for,
    split,
)
from napari_medvit.transforms import tabular_names, tabular_vector
from napari_medvit.transforms.augment import augment_2d, augment_3d
from napari_medvit.transforms.prepare import prepare_frame, prepare_volume_classifier

RESERVED_COLUMNS = ("case_id", "label", "image", "provenance")



def balanced_accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (sklearn's definition)."""
    t, p = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if t.size == 0 or t.shape != p.shape:
        raise ValueError(f"balanced accuracy needs equally long, non-empty label lists; got {t.size} and {p.size}")
    return float(np.mean([np.mean(p[t == c] == c) for c in np.unique(t)]))


def accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    t, p = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if t.size == 0 or t.shape != p.shape:
        raise ValueError(f"accuracy needs equally long, non-empty label lists; got {t.size} and {p.size}")
    return float(np.mean(t == p))


def read_labels(dataset: str | Path) -> list[dict[str, str]]:
    """The rows of ``labels.csv``; each must name its label and an existing image (ValueError otherwise)."""
    root = Path(dataset)
    path = root / "labels.csv"
    if not path.is_file():
        raise ValueError(f"{root}: no labels.csv — export class labels (export_class_label) into this folder first")
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("case_id", "label", "image") if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
            rows = [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:  # not text, or broken quoting
        raise ValueError(f"{path}: not a readable CSV file ({type(exc).__name__}: {exc})") from exc
    for n, row in enumerate(rows, start=2):
        case = row["case_id"] or f"(line {n})"
        if not row["case_id"]:
            raise ValueError(f"{path}: line {n} has no case_id")
        if not row["label"]:
            raise ValueError(f"{path}: case {case} has no label")
        if not row["image"]:
            raise ValueError(f"{path}: case {case} has no image (empty 'image' column); export it with its image "
                             "(export_class_label(..., image=..., meta=...)) or remove the row")
        if not (root / row["image"]).exists():
            raise ValueError(f"{path}: the image {row['image']!r} of case {case} does not exist")
    if len(rows) < 2:
        raise ValueError(f"{path}: {len(rows)} case(s); fine-tuning needs at least 2 (training and validation)")
    return rows


def _cell(value: str) -> float | str | None:
    """A CSV cell as a tabular value: empty or NaN is missing, numbers become floats (others stay text)."""
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return value  # tabular_vector names the feature that is not a number
    return None if np.isnan(number) else number


def standardised(features: Sequence[Mapping[str, Any]],
                 rows: Sequence[Mapping[str, str]]) -> tuple[dict[str, Any], ...]:
    """The feature list with each feature's ``mean``/``std`` over the given rows' present values, as the
    official DAFT script standardises its tabular data with training statistics; features that already
    carry statistics, or have no numeric value in the rows, are kept as they are."""
    out = []
    for f in features:
        f = dict(f)
        if "mean" not in f:
            values = [v for r in rows if isinstance(v := _cell(r.get(f["name"]) or ""), float)]
            if values:
                f["mean"] = float(np.mean(values))
                f["std"] = float(np.std(values)) or 1.0
        out.append(f)
    return tuple(out)


def encode_tabular(features: Sequence[Mapping[str, Any]], row: Mapping[str, str], case: str) -> np.ndarray:
    """One labels.csv row's tabular columns as the model's input vector (see :func:`tabular_vector`)."""
    values = {k: _cell(v) for k, v in row.items() if k not in RESERVED_COLUMNS}
    try:
        return tabular_vector(features, values)
    except ValueError as exc:
        raise ValueError(f"case {case}: {exc}") from None


class ClassifyTask(Task):
    class_names: list[str]  # always from the data
    metric = "balanced accuracy"

    def __init__(self, dataset: str | Path, model: torch.nn.Module, device: torch.device, *, val_fraction: float,
                 seed: int, size: tuple[int, ...] | None, augment: str) -> None:
        super().__init__(dataset, model, device, val_fraction=val_fraction, seed=seed, size=size, augment=augment)
        rows = read_labels(dataset)
        spec = self.spec
        adapter = self.config.adapter
        self.tabular = bool(self.config.tabular_features)
        self.volume = spec.dims == 3
        self.class_names = class_names_for([r["label"] for r in rows], base_class_names(model))
        n_out = getattr(model, "num_classes", None)
        if n_out is not None and int(n_out) != len(self.class_names):
            raise ValueError(f"{spec.name} has {n_out} outputs but the data defines {len(self.class_names)} classes "
                             f"{self.class_names}; build it with {adapter.class_count_arg}="
                             f"{len(self.class_names)}")
        if len(self.class_names) < 2:
            raise ValueError(f"{self.dataset}: every case has the label {self.class_names[0]!r}; a classifier needs "
                             "at least 2 classes")
        train_idx, val_idx = split([r["case_id"] for r in rows], val_fraction, seed)
        self.train_ids = [rows[i]["case_id"] for i in train_idx]
        self.val_ids = [rows[i]["case_id"] for i in val_idx]
        self.labels = [self.class_names.index(r["label"]) for r in rows]

        pre = self.config.preprocessing
        if self.volume:
            self.size = tuple(size or pre.resize3d or (64, 64, 64))
            if len(self.size) != 3:
                raise ValueError(f"{spec.name} trains on volumes: size must have 3 entries, got {self.size}")
        else:
            self.size = tuple(size or pre.resize or (224, 224))
            if len(self.size) != 2:
                raise ValueError(f"{spec.name} trains on 2D frames: size must have 2 entries, got {self.size}")
        if self.tabular:
            self.features = self.config.tabular_features
            info = getattr(model, "checkpoint_info", None)
            if not (info is not None and info.trained):  # untrained: standardise with the training rows' statistics
                self.features = standardised(self.features, [rows[i] for i in train_idx])
                self.preprocessing = {"tabular": [dict(f) for f in self.features]}  # the predictor applies them
            n_tab = getattr(model, "n_tabular", None)
            width = len(tabular_names(self.features))
            if n_tab is not None and int(n_tab) != width:
                raise ValueError(f"{spec.name} takes {n_tab} tabular values; its feature list gives {width}")

        self.default_lr = 0.013 if self.volume else 1e-4
        self.weight_decay = 0.0 if self.volume else 0.05
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=adapter.label_smoothing)
        self.xs_t, self.tab_t, self.ys_t = self._tensors(rows, train_idx)
        self.xs_v, self.tab_v, self.ys_v = self._tensors(rows, val_idx)
        self.accuracy: float | None = None  # of the last evaluation
        self.evaluations: list[dict[str, float]] = []  # balanced accuracy and accuracy of every evaluation

    @classmethod
    def model_overrides(cls, dataset: str | Path, spec: Any, base_names: Sequence[str] = ()) -> dict[str, Any]:
        """The number of outputs the data needs, unless the base model's class names (``base_names``,
        default the registry's) already hold every label (then the factory's default, or a
        checkpoint's own configuration, decides)."""
        return class_count_override([r["label"] for r in read_labels(dataset)], spec, base_names)

    def _tensors(self, rows: list[dict[str, str]], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                            torch.Tensor]:
        if not idx:  # evaluation only: no training cases
            channels = 1 if self.volume else self.spec.in_chans
            empty_tab = torch.empty(0, len(tabular_names(self.features)), device=self.device) if self.tabular else None
            return (torch.empty(0, channels, *self.size, device=self.device), empty_tab,
                    torch.empty(0, dtype=torch.long, device=self.device))
        images, tabs = [], []
        for i in idx:
            row, case = rows[i], rows[i]["case_id"]
            image, meta = read_image(self.dataset / row["image"])
            images.append(self._image_tensor(image, bool(meta.rgb), case))
            if self.tabular:
                tabs.append(torch.from_numpy(encode_tabular(self.features, row, case)))
        xs = torch.stack(images).to(self.device)
        ys = torch.tensor([self.labels[i] for i in idx], dtype=torch.long, device=self.device)
        return xs, (torch.stack(tabs).to(self.device) if self.tabular else None), ys

    def _image_tensor(self, image: np.ndarray, rgb: bool, case: str) -> torch.Tensor:
        """A case's model input, prepared as the predictor prepares it (transforms.prepare)."""
        pre = self.config.preprocessing
        if not self.volume:
            h, w = self.size
            return prepare_frame(image, rgb, pre, self.spec.in_chans, (h, w), what=f"case {case}")
        if image.ndim != 3 or rgb:
            raise ValueError(f"case {case}: a 3D classifier takes a 3D single-channel volume; got an array of "
                             f"shape {image.shape}")
        z, y, x = self.size
        return prepare_volume_classifier(image, replace(pre, resize3d=(z, y, x)))[0]

    def batch(self, idx: list[int], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        if self.volume:
            x = augment_3d(self.xs_t[idx], gen, self.augment)
            if self.tabular:
                return x, self.tab_t[idx], self.ys_t[idx]  # type: ignore[index]
            return x, self.ys_t[idx]
        x, _ = augment_2d(self.xs_t[idx], [], gen, self.augment)
        return x, self.ys_t[idx]

    def _logits(self, model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return model(batch[0], batch[1]) if self.tabular else model(batch[0])

    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.loss_fn(self._logits(model, batch).float(), batch[-1])

    @torch.no_grad()
    def predict_val(self, model: torch.nn.Module, batch_size: int = 16) -> np.ndarray:
        """Predicted class index of every validation case."""
        model.eval()
        preds = []
        for start in range(0, len(self.ys_v), batch_size):
            sl = slice(start, start + batch_size)
            batch = (self.xs_v[sl], self.tab_v[sl]) if self.tabular else (self.xs_v[sl],)  # type: ignore[index]
            preds.append(self._logits(model, batch).argmax(dim=1).cpu())
        return torch.cat(preds).numpy()

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> float:
        truth, pred = self.ys_v.cpu().numpy(), self.predict_val(model)
        score, self.accuracy = balanced_accuracy(truth, pred), accuracy(truth, pred)
        self.evaluations.append({"balanced_accuracy": score, "accuracy": self.accuracy})
        return score

    def optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        params = [p for p in params if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {**super().summary(), "size": list(self.size), "class_names": list(self.class_names),
                               "loss": f"cross-entropy (label smoothing {self.loss_fn.label_smoothing:g})"}
        count = Counter(self.class_names[int(y)] for y in self.ys_t.tolist())
        out["train_class_counts"] = {n: count.get(n, 0) for n in self.class_names}
        count = Counter(self.class_names[int(y)] for y in self.ys_v.tolist())
        out["val_class_counts"] = {n: count.get(n, 0) for n in self.class_names}
        if self.evaluations:
            out["base_val_accuracy"] = self.evaluations[0]["accuracy"]
            epochs = self.evaluations[1:]
            if epochs:  # the accuracy of the first epoch with the best balanced accuracy (the promoted one)
                best = max(epochs, key=lambda e: e["balanced_accuracy"])
                out["val_accuracy"] = best["accuracy"]
            out["val_history"] = list(self.evaluations[1:])
        if self.tabular:
            out["tabular"] = [dict(f) for f in self.features]
        return out


TASK = ClassifyTask
