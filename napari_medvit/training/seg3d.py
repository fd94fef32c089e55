"""Fine-tuning task for 3D segmentation (Swin-UNETR, UNETR, the VoSHT approximation, the 3D U-Net, TrUE-Net)
on an nnU-Net export folder of NIfTI cases.

Data: ``dataset.json`` (``file_ending`` ".nii.gz", ``channel_names``, ``labels``), ``imagesTr/<case>_0000.nii.gz``
... ``_000C`` (one file per channel) and ``labelsTr/<case>.nii.gz``. The number of channels must be the
model's ``in_channels`` and every label value must be below its ``out_channels``; the class names of the
fine-tuned version come from ``labels`` (by value).

Preprocessing is the predictor's: :func:`~napari_medvit.transforms.prepare.prepare_volume` with the model's
resolved preprocessing (the checkpoint manifest's keys over the registry's): reorientation / resampling to
``axcodes`` / ``pixdim`` when given (labels with nearest neighbour); each channel scaled by the fixed
``intensity`` window, or robustly to 0..1 on its own distribution; then ``(x - mean) / std``. The volumes are
prepared once and kept in memory. How the network trains follows its adapter's ``volume_training``:
:class:`PatchTraining` (MONAI networks) or :class:`PlaneTraining` (TrUE-Net).

MONAI networks (as in the official Swin-UNETR / UNETR BTCV scripts, research-contributions
``SwinUNETR/BTCV``): training patches of the ROI size (the config's ``size`` when given, else the
predictor's ``roi_size``) from ``RandCropByPosNegLabeld(pos=1, neg=1, image_threshold=0)`` — half the patches
centred on a foreground voxel — after zero padding of volumes smaller than the ROI. Augmentation
``"flips"``: ``RandFlipd`` on each of the three axes (p 0.2 each, the official setting); ``"standard"``: also
``RandRotate90d`` (p 0.2, max_k 3, in the axial plane, when the ROI is square there) and
``RandScaleIntensityd(0.1)`` / ``RandShiftIntensityd(0.1)`` (p 0.1 each). Each case of the batch gives the
registry entry's ``patches_per_case`` patches (Swin-UNETR, UNETR and the VoSHT approximation: 4, as the official
BTCV scripts take per volume at batch 1; otherwise 1). All random transforms are seeded from the batch's
``torch.Generator``. Loss: MONAI ``DiceCELoss(to_onehot_y=True, softmax=True)``; optimiser AdamW, lr 1e-4,
weight decay 1e-5 (the official Swin-UNETR defaults). From untrained weights, the output convolution of
Swin-UNETR / UNETR starts at the training labels' class prior (:func:`init_output_bias`; recorded in the
run's summary as ``output_bias``). A model whose registry entry asks for ``class_weights`` (the VoSHT
approximation's weighted loss) weights both loss terms by 1 / sqrt of each class's voxel frequency in the
training labels, mean 1 (:func:`class_weights`; not for TrUE-Net's plane networks).

TrUE-Net (official v-sundaresan/truenet): its three plane networks are 2D U-Nets trained on slices of their
own plane. Each batch holds, per plane and case, ``slices_per_case`` slices picked by the same
``RandCropByPosNegLabeld`` (a one-voxel-thick crop: half the slices through a foreground voxel), full
in-plane extent (zero-padded to the largest slice of the batch) or the config's ``size``; 2D flips and
the intensity jitter as above. Loss: the mean over the three planes of each network's cross-entropy. The
official ``CombinedLoss`` adds a Dice term of the thresholded mask, which carries no gradient, and can
weight the cross-entropy by spatial maps from ventricle / grey-matter distance images, which an export
folder does not have: neither is used. Optimiser: Adam with eps 1e-4, lr 1e-4 (the official fine-tuning
defaults).

Validation metric "Dice": mean foreground Dice (MONAI ``DiceMetric(include_background=False)``, classes
absent from a case's reference ignored) of the argmax of the softmax, from MONAI ``sliding_window_inference``
with the predictor's ROI, overlap, blending and window batch (TrUE-Net: the whole volume, as the
predictor runs it). When no validation case has any foreground, an empty prediction counts 1, any other 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_medvit.io import read_image
from napari_medvit.training.tasks import Task, call, nnunet_cases, split
from napari_medvit.training.tasks import read_dataset_json as _read_json_object
from napari_medvit.transforms.prepare import prepare_volume
from napari_medvit.transforms.preprocessing import Preprocessing

ENDING = ".nii.gz"
PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}  # as napari_medvit.models.truenet.PLANES (no import of it here)


def read_dataset_json(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    info = _read_json_object(root)
    if info.get("file_ending") != ENDING:
        raise ValueError(f"{root}: fine-tuning 3D models needs NIfTI ({ENDING}) cases, the folder holds "
                         f"{info.get('file_ending')!r}")
    if not info.get("channel_names"):
        raise ValueError(f"{path}: no channel_names")
    return info


def label_values(info: dict[str, Any], where: Path) -> dict[int, str]:
    """value -> name from ``labels``: nnU-Net v2 ``{"name": value}`` or MSD ``{"value": "name"}``."""
    labels = info.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{where}: dataset.json has no labels")
    out: dict[int, str] = {}
    for key, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"{where}: label {key!r} = {value!r}: region-based (list) labels are not supported")
        if isinstance(value, int):
            out[value] = str(key)
        elif str(key).isdigit():
            out[int(key)] = value
        else:
            raise ValueError(f"{where}: label {key!r} = {value!r} is not an integer value")
    return out


def load_cases(dataset: str | Path, n_channels: int, n_classes: int, pre: Preprocessing,
               ) -> tuple[list[str], list[np.ndarray], list[np.ndarray], dict[int, str]]:
    """Case ids, preprocessed (C, z, y, x) float32 volumes, (1, z, y, x) label maps and the label names."""
    root = Path(dataset)
    info = read_dataset_json(root)
    names = label_values(info, root)
    n_files = len(info["channel_names"])
    if n_files != n_channels:
        listed = ", ".join(map(str, info["channel_names"].values()))
        raise ValueError(f"{root}: the cases have {n_files} channel(s) ({listed}) but the model takes "
                         f"in_channels={n_channels}")
    if max(names) >= n_classes or min(names) < 0:
        raise ValueError(f"{root}: label values {sorted(names)} do not fit the model's out_channels={n_classes} "
                         f"(values 0..{n_classes - 1})")
    ids, images, labels = [], [], []
    smallest = pre.min_size
    dtype = np.uint8 if n_classes <= 256 else np.int32
    for case in nnunet_cases(root, info, ENDING, n_channels):  # the label files, checked against dataset.json
        label_file = root / "labelsTr" / f"{case}{ENDING}"
        channels = []
        for c in range(n_channels):
            path = root / "imagesTr" / f"{case}_{c:04d}{ENDING}"
            data, meta = read_image(path)
            if data.ndim != 3:
                raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
            channels.append(data)
        if len({ch.shape for ch in channels}) != 1:
            raise ValueError(f"{root}: the channels of case {case} differ in shape: {[ch.shape for ch in channels]}")
        lab, _ = read_image(label_file)
        lab = np.asarray(lab)
        if lab.shape != channels[0].shape:
            raise ValueError(f"{root}: labels of case {case} have shape {lab.shape}, its image {channels[0].shape}")
        if lab.min() < 0 or lab.max() >= n_classes:
            raise ValueError(f"{root}: case {case} holds label values {lab.min()}..{lab.max()}, which do not fit the "
                             f"model's out_channels={n_classes}")
        if min(lab.shape) < smallest:
            raise ValueError(f"{root}: case {case} of shape {lab.shape} is smaller than the model's minimum {smallest}")
        prepared = prepare_volume(np.stack(channels), pre, meta.affine, labels=lab.astype(dtype)[None])
        ids.append(case)
        images.append(prepared.x)
        labels.append(np.ascontiguousarray(prepared.labels))
    if len(ids) < 2:
        raise ValueError(f"{root}: {len(ids)} case(s); fine-tuning needs at least 2 (training and validation)")
    return ids, images, labels, names


def _augmentations(augment: str, ndim: int, rotate_axes: tuple[int, int] | None) -> list[Any]:
    """The official BTCV augmentations after the crop (dictionary transforms on image + label)."""
    from monai.transforms import RandFlipd, RandRotate90d, RandScaleIntensityd, RandShiftIntensityd

    keys = ["image", "label"]
    out: list[Any] = []
    if augment in ("flips", "standard"):
        out += [RandFlipd(keys=keys, prob=0.2, spatial_axis=axis) for axis in range(ndim)]
    if augment == "standard":
        if rotate_axes is not None:
            out.append(RandRotate90d(keys=keys, prob=0.2, max_k=3, spatial_axes=rotate_axes))
        out += [RandScaleIntensityd(keys="image", factors=0.1, prob=0.1),
                RandShiftIntensityd(keys="image", offsets=0.1, prob=0.1)]
    return out


def class_frequencies(labels: list[torch.Tensor], n_classes: int) -> torch.Tensor:
    """Voxel frequency of each class over the given label maps, add-one smoothed (an absent class stays > 0)."""
    counts = torch.zeros(n_classes, dtype=torch.float64)
    for lab in labels:
        counts += torch.bincount(lab.reshape(-1).long(), minlength=n_classes)[:n_classes].double()
    return (counts + 1.0) / (counts.sum() + n_classes)


def class_weights(freq: torch.Tensor, rule: str) -> torch.Tensor:
    """Loss weights per class from their frequencies, mean 1. ``"inverse_sqrt_frequency"``: 1 / sqrt(f)."""
    if rule != "inverse_sqrt_frequency":
        raise ValueError(f"unknown class_weights rule {rule!r}; known: 'inverse_sqrt_frequency'")
    w = freq.rsqrt()
    return w / w.mean()


def init_output_bias(model: torch.nn.Module, freq: torch.Tensor) -> bool:
    """Start an untrained MONAI network's output convolution (``out.conv.conv``: Swin-UNETR, UNETR) at the
    training labels' class prior: bias = log(voxel frequency), centred (Lin et al., Focal Loss, 2017).

    From a random output layer, a transformer spends its first hundreds of steps only learning that almost
    every voxel is background (Adam moves the bias by about lr per step, and the prior of sparse lesions is a
    logit gap of about 7): in the demo runs the validation Dice stayed 0 for 300 steps. Returns False when the
    model has no such layer (U-Net, TrUE-Net keep their initialisation)."""
    conv = getattr(getattr(getattr(model, "out", None), "conv", None), "conv", None)
    if not isinstance(conv, torch.nn.Conv3d) or conv.bias is None or conv.out_channels != len(freq):
        return False
    logits = freq.log()
    with torch.no_grad():
        conv.bias.copy_((logits - logits.mean()).to(conv.bias))
    return True


class PatchTraining:
    """MONAI networks: ROI patches from ``RandCropByPosNegLabeld``, the softmax Dice-CE loss (class-weighted
    when the registry entry asks), AdamW; an untrained output layer starts at the class prior."""

    def __init__(self, task: Segment3DTask, model: torch.nn.Module, augment: str) -> None:
        from monai.transforms import Compose, SpatialPadd

        spec, size = task.spec, task.size
        if size is None:
            raise ValueError(f"{spec.name}: no roi_size in its preprocessing; give a training size")
        multiple = task.pre.size_multiple
        if any(s % multiple for s in size):
            raise ValueError(f"{spec.name}: training size {size} must be a multiple of {multiple} along each axis")
        problem = task.config.adapter.check_patch_size(model, size)
        if problem:
            raise ValueError(f"{spec.name}: {problem}")
        fixed = (getattr(model, "config", None) or {}).get("img_size")
        for what, r in (("training size", size), ("sliding-window roi_size", task.eval_roi)):
            if fixed is not None and r is not None and tuple(r) != tuple(fixed):
                raise ValueError(f"{spec.name} runs at a fixed img_size {tuple(fixed)}; its {what} is {r}")
        self.task = task
        self.patches_per_case = task.config.training.patches_per_case
        rotate = (1, 2) if size[1] == size[2] else None  # the axial plane of (z, y, x)
        self.pipeline = Compose([SpatialPadd(keys=KEYS, spatial_size=size), _crop(size, self.patches_per_case),
                                 *_augmentations(augment, 3, rotate)])
        self.class_weights: torch.Tensor | None = None
        self.output_bias = False
        self.loss_fn: Any = None

    def prepare(self, model: torch.nn.Module, frequencies: torch.Tensor) -> None:
        """After the cases are loaded: loss weights and the output bias from the training labels."""
        from monai.losses import DiceCELoss

        task = self.task
        info = getattr(model, "checkpoint_info", None)
        self.output_bias = info is not None and not info.trained and init_output_bias(model, frequencies)
        rule = task.config.training.class_weights
        self.class_weights = class_weights(frequencies, rule) if rule else None
        weight = None if self.class_weights is None else self.class_weights.float().to(task.device)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, weight=weight)

    def batch(self, idx: list[int], gen: torch.Generator) -> Any:
        samples = self.task.samples(self.pipeline, idx, gen)
        return (torch.stack([s["image"] for s in samples]).float().to(self.task.device),
                torch.stack([s["label"] for s in samples]).long().to(self.task.device))

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return self.loss_fn(model(x).float(), y)

    def optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-5)

    def summary(self) -> dict[str, Any]:
        return {"patches_per_case": self.patches_per_case,
                **({"output_bias": "log class frequencies"} if self.output_bias else {}),
                **({"class_weights": [float(w) for w in self.class_weights]} if self.class_weights is not None
                   else {})}


def _pad_to(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Zero (background) padding of the last two axes, at their ends, to ``h`` x ``w``."""
    return F.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]))


class PlaneTraining:
    """TrUE-Net: per plane and case ``slices_per_case`` slices (half through a foreground voxel), the mean
    of the three plane networks' cross-entropy, Adam (eps 1e-4)."""

    slices_per_case = 4  # per plane and case (batch 2 -> the official batch of 8 slices)

    def __init__(self, task: Segment3DTask, model: torch.nn.Module, augment: str) -> None:
        from monai.transforms import Compose, SpatialPadd, SqueezeDimd

        self.task = task
        self.pipelines = {}
        for plane, axis in PLANES.items():
            extent = list(task.size) if task.size else [-1, -1, -1]
            extent[axis] = 1
            in_plane = [e for i, e in enumerate(extent) if i != axis]
            square = in_plane[0] == in_plane[1] and in_plane[0] > 0
            pad = [SpatialPadd(keys=KEYS, spatial_size=task.size)] if task.size else []
            self.pipelines[plane] = Compose([*pad, _crop(tuple(extent), self.slices_per_case),
                                             SqueezeDimd(keys=KEYS, dim=1 + axis),
                                             *_augmentations(augment, 2, (0, 1) if square else None)])

    def prepare(self, model: torch.nn.Module, frequencies: torch.Tensor) -> None:
        """The plane networks keep their initialisation and train unweighted."""

    def batch(self, idx: list[int], gen: torch.Generator) -> Any:
        """{plane: (slices, labels)}, each zero-padded to the batch's largest slice."""
        out = {}
        for plane, pipeline in self.pipelines.items():
            samples = self.task.samples(pipeline, idx, gen)
            h = max(s["image"].shape[-2] for s in samples)
            w = max(s["image"].shape[-1] for s in samples)
            out[plane] = (torch.stack([_pad_to(s["image"], h, w) for s in samples]).float().to(self.task.device),
                          torch.stack([_pad_to(s["label"], h, w) for s in samples]).long().to(self.task.device))
        return out

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        logits = call(model, "plane_logits", {plane: x for plane, (x, _) in batch.items()})  # one call: DDP-safe
        losses = [F.cross_entropy(logits[plane].float(), y[:, 0]) for plane, (_, y) in batch.items()]
        return torch.stack(losses).mean()

    def optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr, eps=1e-4)

    def summary(self) -> dict[str, Any]:
        return {}


# by the adapter's ``volume_training``
TRAINING: dict[str, type[PatchTraining | PlaneTraining]] = {"patches": PatchTraining, "planes": PlaneTraining}
KEYS = ["image", "label"]


def _crop(spatial_size: tuple[int, ...], n: int) -> Any:
    from monai.transforms import RandCropByPosNegLabeld

    return RandCropByPosNegLabeld(keys=KEYS, label_key="label", image_key="image", spatial_size=spatial_size,
                                  pos=1, neg=1, num_samples=n, image_threshold=0)


class Segment3DTask(Task):
    metric = "Dice"
    default_lr = 1e-4

    def __init__(self, dataset: str | Path, model: torch.nn.Module, device: torch.device, *, val_fraction: float,
                 seed: int, size: tuple[int, ...] | None, augment: str) -> None:
        super().__init__(dataset, model, device, val_fraction=val_fraction, seed=seed, size=size, augment=augment)
        self.pre = self.config.preprocessing
        self.n_in, self.n_out = self.config.adapter.channels(model, self.spec.in_chans)
        self.n_out = self.n_out or len(self.spec.class_names)
        if self.n_out < 2:
            raise ValueError(f"{self.spec.name}: out_channels={self.n_out}; the softmax Dice-CE loss needs >= 2")
        if size is not None and (len(size) != 3 or min(int(s) for s in size) < 1):
            raise ValueError(f"size must be three positive voxel counts (z, y, x), got {size}")
        self.eval_roi = tuple(self.pre.roi_size) if self.pre.roi_size else None  # None: the whole volume
        chosen = size or self.eval_roi
        self.size = tuple(int(s) for s in chosen) if chosen else None  # training patch; None: whole slices
        self.training = TRAINING[self.config.adapter.volume_training](self, model, augment)

        ids, images, labels, names = load_cases(dataset, self.n_in, self.n_out, self.pre)
        train_idx, val_idx = split(ids, val_fraction, seed)
        self.train_ids = [ids[i] for i in train_idx]
        self.val_ids = [ids[i] for i in val_idx]
        self.train_data = [(torch.from_numpy(images[i]), torch.from_numpy(labels[i])) for i in train_idx]
        self.val_data = [(torch.from_numpy(images[i]), torch.from_numpy(labels[i])) for i in val_idx]
        self.frequencies = class_frequencies([lab for _, lab in self.train_data], self.n_out)
        self.training.prepare(model, self.frequencies)
        base = list(self.config.class_names)
        if len(base) != self.n_out:
            base = [f"class {i}" for i in range(self.n_out)]
        self.class_names = [names.get(i, base[i]) for i in range(self.n_out)]

    # -- training ------------------------------------------------------------------------------
    def samples(self, pipeline: Any, idx: list[int], gen: torch.Generator) -> list[dict[str, Any]]:
        """The crops of ``pipeline`` from the training cases ``idx``, its random state seeded from ``gen``."""
        from monai.utils import convert_to_tensor

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        pipeline.set_random_state(seed=seed)
        out = []
        for i in idx:
            image, label = self.train_data[i]
            for sample in pipeline({"image": image, "label": label}):
                out.append({k: convert_to_tensor(sample[k], track_meta=False) for k in KEYS})
        return out

    def batch(self, idx: list[int], gen: torch.Generator) -> Any:
        """(patches (B, C, *size), labels (B, 1, *size)); TrUE-Net: {plane: (slices, labels)}."""
        return self.training.batch(idx, gen)

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        return self.training.loss(model, batch)

    def optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        return self.training.optimizer(params, lr)

    # -- validation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> float:
        from monai.inferers import sliding_window_inference
        from monai.metrics import DiceMetric

        model.eval()
        present = DiceMetric(include_background=False, num_classes=self.n_out, get_not_nans=True)
        strict = DiceMetric(include_background=False, num_classes=self.n_out, ignore_empty=False)
        for image, label in self.val_data:
            roi = self.eval_roi or tuple(image.shape[1:])
            logits = sliding_window_inference(image[None], roi, self.pre.sw_batch_size, model,
                                              overlap=self.pre.overlap, mode=self.pre.blend, sw_device=self.device,
                                              device="cpu")
            pred = torch.softmax(logits.float(), dim=1).argmax(dim=1, keepdim=True)
            present(y_pred=pred, y=label[None].long())
            strict(y_pred=pred, y=label[None].long())
        dice, not_nans = present.aggregate()
        if float(not_nans) > 0:
            return float(dice)
        return float(strict.aggregate())

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "size": list(self.size) if self.size else None,
                "roi_size": list(self.eval_roi) if self.eval_roi else None, "channels": self.n_in,
                "class_frequencies": [float(f) for f in self.frequencies], **self.training.summary()}


TASK = Segment3DTask
