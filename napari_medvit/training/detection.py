"""Fine-tuning SMCA-DETR on a COCO export folder: data, set-prediction loss, AP50.

The loss (SMCA-DETR's Hungarian set loss with sigmoid focal classification, L1 and GIoU):

Follows the official SMCA-DETR (models/matcher.py, models/detr.py SetCriterion): the matcher's
class cost is the focal-loss difference ``alpha (1-p)^g (-log p) - (1-alpha) p^g (-log(1-p))`` at the
target class (alpha 0.25, gamma 2), plus L1 and negative GIoU box costs (weights 2 / 5 / 2), solved
with scipy's ``linear_sum_assignment``. Losses: sigmoid focal loss over all K+1 logits summed and
divided by the number of target boxes (weight 2), L1 (5) and 1 - GIoU (2) on matched pairs, and the
same for every auxiliary decoder layer (suffix ``_i``). Targets: per image ``labels`` (N,) and
``boxes`` (N, 4) normalised (cx, cy, w, h).

The task (:class:`DetectTask`):

- Data: an ``annotations.json`` (COCO) export folder
  (:func:`napari_medvit.training.export.export_boxes_coco`): ``images`` with ``file_name`` under
  ``images/`` (or the folder itself), ``annotations`` with ``bbox`` ``[x, y, w, h]`` in pixels and a
  ``category_id``, ``categories`` naming the classes. Images without boxes are negatives and are
  trained on (every query learns "no object" there); crowd annotations are skipped, as DETR's COCO
  loader does. A box outside its image, an unknown category or a missing image raises ValueError
  naming it.
- Classes: the categories' names in id order, unless the base model's class names (its
  checkpoint manifest's, else the registry's) hold them all; then those names in their order, so
  that a fine-tuned model keeps the base model's class indices (as for classification).
  :meth:`DetectTask.model_overrides` gives the factory ``num_classes`` when the data needs others.
- Inputs as :class:`~napari_medvit.inference.predictor.Predictor` prepares them for detection:
  ``scale_to_unit``, grey replicated to RGB, ImageNet normalisation, bilinear (antialiased) resize
  to the model's ``resize``. Boxes are normalised to the image, so resizing leaves them unchanged.
- Augmentation (seeded from the batch's ``torch.Generator``): ``"flips"`` flips left-right and
  up-down with the boxes; ``"standard"`` adds a random scale (0.8-1.2) and shift (up to 10 % of
  each side) of image and boxes together (``torchvision.transforms.v2.functional.affine`` on the
  image and on ``tv_tensors.BoundingBoxes``; no rotation, which would loosen the boxes), dropping
  a box when less than 30 % of it stays in the frame, then brightness/contrast jitter. DETR's own
  recipe is flips plus random resizes and crops, which these replace at a fixed input size.
- Optimiser of the official script: AdamW, lr 1e-4 with the backbone at a tenth of it (1e-5),
  weight decay 1e-4, gradient clipping at norm 0.1.
- Validation metric: ``AP50``, COCO-style average precision at IoU 0.5 (101-point interpolation,
  up to 100 detections per image: the top query x class scores, sigmoid of the real classes'
  logits, as SMCA-DETR's post-processing), averaged over the classes that have validation boxes;
  computed with MONAI's ``matching_batch`` and ``COCOMetric``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from napari_medvit.io import read_image
from napari_medvit.training.tasks import Task, base_class_names, call, class_count_override, class_names_for, split
from napari_medvit.transforms.augment import intensity
from napari_medvit.transforms.prepare import prepare_frame

ALPHA, GAMMA = 0.25, 2.0


def _xyxy(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


class HungarianMatcher(nn.Module):
    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0) -> None:
        super().__init__()
        if cost_class == cost_bbox == cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @torch.no_grad()
    def forward(self, outputs: dict[str, torch.Tensor],
                targets: list[dict[str, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        bs, nq = outputs["pred_logits"].shape[:2]
        prob = outputs["pred_logits"].flatten(0, 1).float().sigmoid()
        pred = outputs["pred_boxes"].flatten(0, 1).float()
        tgt_ids = torch.cat([t["labels"] for t in targets]).long()
        tgt_box = torch.cat([t["boxes"] for t in targets]).float()
        if tgt_box.numel() == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in targets]
        neg = (1 - ALPHA) * prob**GAMMA * (-(1 - prob + 1e-8).log())
        pos = ALPHA * (1 - prob) ** GAMMA * (-(prob + 1e-8).log())
        cost = (self.cost_class * (pos[:, tgt_ids] - neg[:, tgt_ids])
                + self.cost_bbox * torch.cdist(pred, tgt_box, p=1)
                - self.cost_giou * generalized_box_iou(_xyxy(pred), _xyxy(tgt_box)))
        cost = cost.view(bs, nq, -1).cpu()
        sizes = [len(t["boxes"]) for t in targets]
        out = []
        for i, c in enumerate(cost.split(sizes, -1)):
            rows, cols = linear_sum_assignment(c[i].numpy())
            out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return out


class SetCriterion(nn.Module):
    """Returns a dict of the individual losses and ``loss``, their weighted sum."""

    def __init__(self, num_classes: int, matcher: HungarianMatcher | None = None,
                 weights: dict[str, float] | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher or HungarianMatcher()
        self.weights = weights or {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}

    def _losses(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]],
                num_boxes: float) -> dict[str, torch.Tensor]:
        indices = self.matcher(outputs, targets)
        logits = outputs["pred_logits"]
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        onehot = torch.zeros_like(logits)
        matched_cls = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices, strict=True)]).long()
        onehot[batch_idx, src_idx, matched_cls] = 1.0
        loss_ce = sigmoid_focal_loss(logits, onehot, alpha=ALPHA, gamma=GAMMA, reduction="sum") / num_boxes
        src_boxes = outputs["pred_boxes"][batch_idx, src_idx]
        tgt_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices, strict=True)]).to(src_boxes)
        loss_bbox = F.l1_loss(src_boxes, tgt_boxes, reduction="sum") / num_boxes
        loss_giou = (1 - torch.diag(generalized_box_iou(_xyxy(src_boxes), _xyxy(tgt_boxes)))).sum() / num_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def forward(self, outputs: dict[str, Any], targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        num = torch.as_tensor(float(sum(len(t["labels"]) for t in targets)), device=outputs["pred_logits"].device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(num)
            num = num / torch.distributed.get_world_size()
        num_boxes = max(float(num), 1.0)
        losses = self._losses(outputs, targets, num_boxes)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update({f"{k}_{i}": v for k, v in self._losses(aux, targets, num_boxes).items()})
        losses["loss"] = sum(self.weights[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] * v for k, v in losses.items())
        return losses


# -- data -------------------------------------------------------------------------------------------

def read_coco(dataset: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """The category names (in id order) and one record per image: ``case`` (file stem), ``path``,
    ``boxes`` (N, 4) pixel (x0, y0, x1, y1) and ``categories`` (N,) indices into the names."""
    root = Path(dataset)
    path = root / "annotations.json"
    if not path.is_file():
        raise ValueError(f"{root}: no annotations.json — export corrected boxes (COCO) into this folder first")
    try:
        coco = json.loads(path.read_text())
        images, annotations, categories = coco["images"], coco.get("annotations", []), coco["categories"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a COCO annotation file ({exc})") from None
    if not categories:
        raise ValueError(f"{path}: no categories")
    cats = sorted(categories, key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    names = [str(c["name"]) for c in cats]
    records: dict[int, dict[str, Any]] = {}
    for img in images:
        file = root / "images" / img["file_name"]
        file = file if file.is_file() else root / img["file_name"]
        if not file.is_file():
            raise ValueError(f"{path}: the image {img['file_name']!r} (id {img['id']}) does not exist")
        records[img["id"]] = {"case": Path(img["file_name"]).stem, "path": file, "height": img.get("height"),
                              "width": img.get("width"), "boxes": [], "categories": []}
    for ann in annotations:
        rec = records.get(ann.get("image_id"))
        if rec is None:
            raise ValueError(f"{path}: annotation {ann.get('id')} refers to image id {ann.get('image_id')}, "
                             "which is not listed")
        if ann.get("iscrowd", 0):
            continue
        if ann.get("category_id") not in cat_index:
            raise ValueError(f"{path}: annotation {ann.get('id')} has category {ann.get('category_id')}, not one of "
                             f"{sorted(cat_index)}")
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= 0 or h <= 0:
            raise ValueError(f"{path}: annotation {ann.get('id')} of {rec['case']} has an empty box {ann['bbox']}")
        rec["boxes"].append((x, y, x + w, y + h))
        rec["categories"].append(cat_index[ann["category_id"]])
    out = []
    for rec in records.values():
        rec["boxes"] = np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 4)
        rec["categories"] = np.asarray(rec["categories"], dtype=np.int64)
        out.append(rec)
    if len(out) < 2:
        raise ValueError(f"{path}: {len(out)} image(s); fine-tuning needs at least 2 (training and validation)")
    return names, out


def normalised_boxes(boxes_xyxy: np.ndarray, height: int, width: int, case: str) -> torch.Tensor:
    """Pixel (x0, y0, x1, y1) boxes as (cx, cy, w, h) fractions of the image; a box not inside it is refused."""
    b = torch.as_tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4)
    limit = torch.tensor([width, height, width, height], dtype=torch.float32)
    tol = 0.5  # half a pixel of rounding
    if ((b < -tol) | (b > limit + tol)).any():
        bad = b[((b < -tol) | (b > limit + tol)).any(1)][0].tolist()
        raise ValueError(f"case {case}: box (x0, y0, x1, y1) {bad} leaves the {height}x{width} image")
    b = torch.minimum(b.clamp(min=0), limit) / limit
    return box_convert(b, in_fmt="xyxy", out_fmt="cxcywh")


def augment_boxes(x: torch.Tensor, targets: list[dict[str, torch.Tensor]], gen: torch.Generator, kind: str,
                  min_visible: float = 0.3) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Augment a (B, 3, H, W) batch and its normalised (cx, cy, w, h) boxes together (see the module docstring)."""
    if kind == "none":
        return x, targets
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as TF

    h, w = x.shape[-2:]
    scale_px = torch.tensor([w, h, w, h], dtype=torch.float32, device=x.device)
    images, out = [], []
    for img, tgt in zip(x, targets, strict=True):
        boxes, labels = tgt["boxes"], tgt["labels"]
        flip_lr, flip_ud = (torch.rand(2, generator=gen) < 0.5).tolist()
        if flip_lr:
            img, boxes = img.flip(-1), boxes * boxes.new_tensor([-1, 1, 1, 1]) + boxes.new_tensor([1, 0, 0, 0])
        if flip_ud:
            img, boxes = img.flip(-2), boxes * boxes.new_tensor([1, -1, 1, 1]) + boxes.new_tensor([0, 1, 0, 0])
        if kind == "standard":
            s = float(0.8 + 0.4 * torch.rand(1, generator=gen))
            tx, ty = ((torch.rand(2, generator=gen) * 0.2 - 0.1) * torch.tensor([w, h])).tolist()
            img = TF.affine(img, angle=0.0, translate=[tx, ty], scale=s, shear=[0.0, 0.0],
                            interpolation=TF.InterpolationMode.BILINEAR)
            if len(boxes):
                px = box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy") * scale_px
                moved = TF.affine(tv_tensors.BoundingBoxes(px, format="XYXY", canvas_size=(h, w)), angle=0.0,
                                  translate=[tx, ty], scale=s, shear=[0.0, 0.0])
                moved = TF.clamp_bounding_boxes(moved).as_subclass(torch.Tensor)
                area = (moved[:, 2] - moved[:, 0]).clamp(min=0) * (moved[:, 3] - moved[:, 1]).clamp(min=0)
                full = (px[:, 2] - px[:, 0]) * (px[:, 3] - px[:, 1]) * s * s
                keep = area >= min_visible * full
                boxes = box_convert(moved[keep] / scale_px, in_fmt="xyxy", out_fmt="cxcywh")
                labels = labels[keep]
        images.append(img)
        out.append({"boxes": boxes, "labels": labels})
    x = torch.stack(images)
    if kind == "standard":
        x = intensity(x, gen)
    return x, out


# -- metric ---------------------------------------------------------------------------------------------

def detections(outputs: dict[str, torch.Tensor], num_classes: int, top: int = 100) -> list[dict[str, np.ndarray]]:
    """SMCA-DETR's post-processing per image: the ``top`` (query, class) pairs by sigmoid score of the
    real classes, with normalised (x0, y0, x1, y1) boxes, class indices and scores."""
    prob = outputs["pred_logits"][..., :num_classes].float().sigmoid()
    bsz, nq, k = prob.shape
    scores, index = prob.flatten(1).topk(min(top, nq * k), dim=1)
    query, labels = index // k, index % k
    boxes = box_convert(outputs["pred_boxes"].float(), in_fmt="cxcywh", out_fmt="xyxy")
    boxes = torch.gather(boxes, 1, query[..., None].expand(-1, -1, 4))
    return [{"boxes": b.cpu().numpy(), "labels": lab.cpu().numpy(), "scores": sc.cpu().numpy()}
            for b, lab, sc in zip(boxes, labels, scores, strict=True)]


def average_precision_50(preds: Sequence[dict[str, np.ndarray]], truths: Sequence[dict[str, np.ndarray]],
                         class_names: Sequence[str]) -> tuple[float, dict[str, float]]:
    """COCO-style AP at IoU 0.5 (MONAI's matching and COCOMetric), averaged over the classes that have
    ground-truth boxes; also the per-class figures. Boxes (x0, y0, x1, y1) in any one unit."""
    from monai.apps.detection.metrics.coco import COCOMetric
    from monai.apps.detection.metrics.matching import matching_batch
    from monai.data.box_utils import box_iou

    present = sorted({int(c) for t in truths for c in t["labels"]})
    if not present:
        raise ValueError("AP50 needs at least one ground-truth box among the validation images")
    compact = {c: i for i, c in enumerate(present)}  # classes without ground truth have no AP; leave them out

    def keep(labels: np.ndarray) -> np.ndarray:
        return np.isin(labels, present)

    def remap(labels: np.ndarray) -> np.ndarray:
        return np.asarray([compact[int(c)] for c in labels], dtype=np.int64)

    metric = COCOMetric(classes=[class_names[c] for c in present], iou_list=(0.5,), iou_range=(0.5, 0.95, 0.05),
                        max_detection=(100,), verbose=False)
    matched = matching_batch(
        iou_fn=box_iou, iou_thresholds=metric.iou_thresholds,
        pred_boxes=[p["boxes"][keep(p["labels"])].astype(np.float64) for p in preds],
        pred_classes=[remap(p["labels"][keep(p["labels"])]) for p in preds],
        pred_scores=[p["scores"][keep(p["labels"])] for p in preds],
        gt_boxes=[t["boxes"].astype(np.float64).reshape(-1, 4) for t in truths],
        gt_classes=[remap(t["labels"]) for t in truths], max_detections=100)
    scalars = metric(matched)[0]
    per_class = {class_names[c]: float(scalars[f"{class_names[c]}_AP_IoU_0.50_MaxDet_100"]) for c in present}
    return float(np.mean(list(per_class.values()))), per_class


# -- the task --------------------------------------------------------------------------------------

class DetectTask(Task):
    class_names: list[str]  # always from the data
    metric = "AP50"
    default_lr = 1e-4
    clip_norm = 0.1
    backbone_lr_factor = 0.1  # official: lr 1e-4, lr_backbone 1e-5
    weight_decay = 1e-4

    def __init__(self, dataset: str | Path, model: torch.nn.Module, device: torch.device, *, val_fraction: float,
                 seed: int, size: tuple[int, ...] | None, augment: str) -> None:
        super().__init__(dataset, model, device, val_fraction=val_fraction, seed=seed, size=size, augment=augment)
        categories, records = read_coco(dataset)
        self.class_names = class_names_for(categories, base_class_names(model))
        n_model = getattr(model, "num_classes", None)
        if n_model is not None and int(n_model) != len(self.class_names):
            raise ValueError(f"{self.spec.name} detects {n_model} classes but the data defines {len(self.class_names)} "
                             f"{self.class_names}; build it with num_classes={len(self.class_names)}")
        to_name = [self.class_names.index(c) for c in categories]
        pre = self.config.preprocessing
        size = tuple(size or pre.resize or (384, 512))
        if len(size) != 2:
            raise ValueError(f"{self.spec.name} trains on 2D frames: size must have 2 entries, got {size}")
        self.size = (int(size[0]), int(size[1]))
        train_idx, val_idx = split([r["case"] for r in records], val_fraction, seed)
        self.train_ids = [records[i]["case"] for i in train_idx]
        self.val_ids = [records[i]["case"] for i in val_idx]
        frames, targets = [], []
        for rec in records:
            image, meta = read_image(rec["path"])
            h, w = meta.spatial_shape(image.shape)
            frames.append(prepare_frame(image, bool(meta.rgb), pre, self.spec.in_chans, self.size,
                                        what=f"case {rec['case']}"))
            labels = torch.as_tensor([to_name[c] for c in rec["categories"]], dtype=torch.int64)
            targets.append({"boxes": normalised_boxes(rec["boxes"], h, w, rec["case"]).to(device),
                            "labels": labels.to(device)})
        self.xs_t = (torch.stack([frames[i] for i in train_idx]) if train_idx else
                     torch.empty(0, 3, *self.size)).to(device)  # none: evaluation only
        self.xs_v = torch.stack([frames[i] for i in val_idx]).to(device)
        self.targets_t = [targets[i] for i in train_idx]
        self.targets_v = [targets[i] for i in val_idx]
        if not any(len(t["labels"]) for t in self.targets_v):
            raise ValueError(f"{self.dataset}: the {len(val_idx)} validation image(s) {self.val_ids} hold no boxes, so "
                             "AP50 cannot be measured; add images with boxes, or change the seed or validation "
                             "fraction")
        self.criterion = SetCriterion(len(self.class_names))
        self._backbone = {id(p) for p in model.backbone.parameters()} if hasattr(model, "backbone") else set()
        self.per_class: dict[str, float] = {}
        self.evaluations: list[dict[str, float]] = []

    @classmethod
    def model_overrides(cls, dataset: str | Path, spec: Any, base_names: Sequence[str] = ()) -> dict[str, Any]:
        """``num_classes`` when the data's categories are not all among the base model's class names
        (``base_names``, default the registry's)."""
        return class_count_override(read_coco(dataset)[0], spec, base_names)

    def batch(self, idx: list[int], gen: torch.Generator) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        return augment_boxes(self.xs_t[idx], [self.targets_t[i] for i in idx], gen, self.augment)

    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, list[dict[str, torch.Tensor]]]) -> torch.Tensor:
        x, targets = batch
        out = call(model, "forward_all", x)
        return self.criterion({"pred_logits": out["pred_logits"].float(), "pred_boxes": out["pred_boxes"].float(),
                               "aux_outputs": [{k: v.float() for k, v in a.items()} for a in out["aux_outputs"]]},
                              targets)["loss"]

    @torch.no_grad()
    def predict_val(self, model: torch.nn.Module, batch_size: int = 8) -> list[dict[str, np.ndarray]]:
        """Detections (top 100 per image, boxes in pixels of the training size) on the validation images."""
        model.eval()
        preds = []
        for start in range(0, len(self.xs_v), batch_size):
            preds += detections(model(self.xs_v[start:start + batch_size]), len(self.class_names))
        return preds

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> float:
        h, w = self.size
        scale = np.array([w, h, w, h], dtype=np.float64)
        preds = [{**p, "boxes": p["boxes"] * scale} for p in self.predict_val(model)]
        truths = [{"boxes": box_convert(t["boxes"].cpu(), in_fmt="cxcywh", out_fmt="xyxy").numpy() * scale,
                   "labels": t["labels"].cpu().numpy()} for t in self.targets_v]
        ap50, self.per_class = average_precision_50(preds, truths, self.class_names)
        self.evaluations.append({"AP50": ap50, **{f"AP50 {k}": v for k, v in self.per_class.items()}})
        return ap50

    def optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        params = [p for p in params if p.requires_grad]
        groups = [{"params": [p for p in params if id(p) not in self._backbone], "lr": lr},
                  {"params": [p for p in params if id(p) in self._backbone], "lr": lr * self.backbone_lr_factor}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=self.weight_decay)

    def summary(self) -> dict[str, Any]:
        n_boxes = lambda ts: int(sum(len(t["labels"]) for t in ts))  # noqa: E731
        out: dict[str, Any] = {**super().summary(), "size": list(self.size), "class_names": list(self.class_names),
                               "train_boxes": n_boxes(self.targets_t), "val_boxes": n_boxes(self.targets_v),
                               "train_negatives": sum(1 for t in self.targets_t if not len(t["labels"])),
                               "loss": "Hungarian set loss: sigmoid focal 2, L1 5, GIoU 2, "
                                       "with auxiliary decoder layers",
                               "optimizer": f"AdamW, backbone lr x{self.backbone_lr_factor:g}, weight decay "
                                            f"{self.weight_decay:g}, clip norm {self.clip_norm:g}"}
        if len(self.evaluations) > 1:
            out["val_history"] = list(self.evaluations[1:])
        return out


TASK = DetectTask
