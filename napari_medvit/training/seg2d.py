"""Fine-tuning task for 2D binary segmentation (TransFuse family, the 2D U-Net baseline) on a PNG export folder.

Frames are prepared by the one input pipeline the predictor uses (:mod:`napari_medvit.transforms.prepare`),
with the model's resolved preprocessing. The loss variant is the family adapter's
(``segmentation_loss``): ``"structure"`` as in the official TransFuse ISIC script: the PraNet structure
loss (boundary-weighted BCE + weighted IoU) on ``map_2``, ``map_1`` and ``map_x`` with weights
0.5 / 0.3 / 0.2; Adam with betas
(0.5, 0.999), learning rate 7e-5 and gradient clipping at norm 2.0. Models without TransFuse's
auxiliary heads (``"dice_ce"``: the MONAI U-Net baseline) train with MONAI's Dice + BCE loss under the same
optimiser, so that the comparison differs only in the network. Validation metric: mean Dice of
``sigmoid(logits) > 0.5`` (an empty mask predicted empty counts 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_medvit.io import read_image
from napari_medvit.training.tasks import Task, call, nnunet_cases, read_dataset_json, split
from napari_medvit.transforms.augment import augment_2d
from napari_medvit.transforms.prepare import prepare_frame
from napari_medvit.transforms.preprocessing import Preprocessing


def structure_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TransFuse/PraNet structure loss: boundary-weighted BCE + weighted IoU, averaged over the batch."""
    weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    wbce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    pred = torch.sigmoid(logits)
    inter = (pred * mask * weit).sum(dim=(2, 3))
    union = ((pred + mask) * weit).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def deep_supervision_loss(heads: list[tuple[float, torch.Tensor]], mask: torch.Tensor) -> torch.Tensor:
    """The weighted sum of the structure loss of every supervised head (the adapter's ``supervised_heads``)."""
    return torch.stack([weight * structure_loss(logits, mask) for weight, logits in heads]).sum()


def load_cases(dataset: str | Path) -> list[tuple[str, np.ndarray, np.ndarray, bool]]:
    """(case id, frame, binary mask, whether the frame is RGB as its reader says) for every case of a 2D
    export folder; the folder must agree with its dataset.json (:func:`~napari_medvit.training.tasks.nnunet_cases`)."""
    root = Path(dataset)
    info = read_dataset_json(root)
    if info.get("file_ending") != ".png":
        raise ValueError(f"{root}: fine-tuning 2D models needs PNG frames, the folder holds {info.get('file_ending')}")
    cases = []
    for case in nnunet_cases(root, info, ".png", 1):  # the label files, checked against dataset.json
        image_file, label_file = root / "imagesTr" / f"{case}_0000.png", root / "labelsTr" / f"{case}.png"
        image, meta = read_image(image_file)
        labels, _ = read_image(label_file)
        cases.append((case, image, (labels > 0).astype(np.float32), bool(meta.rgb)))
    if len(cases) < 2:
        raise ValueError(f"{root}: {len(cases)} case(s); fine-tuning needs at least 2 (training and validation)")
    return cases


def to_tensors(cases: list[tuple[str, np.ndarray, np.ndarray, bool]], idx: list[int], size: tuple[int, int],
               pre: Preprocessing, in_chans: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, *size), masks (N, 1, *size)) of the cases ``idx``: each frame prepared as the
    predictor prepares it (transforms.prepare), its mask resized by nearest neighbour."""
    if not idx:  # evaluation only: no training cases
        return torch.empty(0, in_chans, *size), torch.empty(0, 1, *size)
    images, masks = [], []
    for i in idx:
        case, image, mask, rgb = cases[i]
        images.append(prepare_frame(image, rgb, pre, in_chans, size, what=f"case {case}"))
        masks.append(F.interpolate(torch.from_numpy(mask)[None, None], size=size, mode="nearest")[0])
    return torch.stack(images), torch.stack(masks)


@torch.no_grad()
def dice_score(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean Dice of ``sigmoid(model(x)) > 0.5`` (an empty mask predicted empty counts 1)."""
    model.eval()
    scores = []
    for x, m in zip(images, masks, strict=True):
        pred = (torch.sigmoid(model(x[None])) > 0.5).float()[0]
        inter, total = float((pred * m).sum()), float(pred.sum() + m.sum())
        scores.append(1.0 if total == 0 else 2 * inter / total)
    return float(np.mean(scores))


class Segment2DTask(Task):
    metric = "Dice"
    default_lr = 7e-5
    clip_norm = 2.0

    def __init__(self, dataset: str | Path, model: torch.nn.Module, device: torch.device, *, val_fraction: float,
                 seed: int, size: tuple[int, ...] | None, augment: str) -> None:
        super().__init__(dataset, model, device, val_fraction=val_fraction, seed=seed, size=size, augment=augment)
        cases = load_cases(dataset)
        train_idx, val_idx = split([c[0] for c in cases], val_fraction, seed)
        pre = self.config.preprocessing
        size = tuple(size or pre.resize or (192, 256))
        if len(size) != 2:
            raise ValueError(f"{self.spec.name} trains on 2D frames: size must have 2 entries, got {size}")
        self.size = (int(size[0]), int(size[1]))
        self.train_ids = [cases[i][0] for i in train_idx]
        self.val_ids = [cases[i][0] for i in val_idx]
        n_in = self.spec.in_chans
        self.xs_t, self.ms_t = (t.to(device) for t in to_tensors(cases, train_idx, self.size, pre, n_in))
        self.xs_v, self.ms_v = (t.to(device) for t in to_tensors(cases, val_idx, self.size, pre, n_in))
        self.deep_supervision = self.config.adapter.segmentation_loss == "structure"
        if not self.deep_supervision:
            from monai.losses import DiceCELoss

            self.dice_ce = DiceCELoss(sigmoid=True)

    def batch(self, idx: list[int], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, (m,) = augment_2d(self.xs_t[idx], [self.ms_t[idx]], gen, self.augment)
        return x, m

    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, m = batch
        if not self.deep_supervision:
            return self.dice_ce(model(x), m)
        heads = self.config.adapter.supervised_heads(call(model, "forward_all", x))
        return deep_supervision_loss(heads, m)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> float:
        return dice_score(model, self.xs_v, self.ms_v)

    def optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "size": list(self.size)}


TASK = Segment2DTask
