"""SMCA-DETR's set-prediction loss: Hungarian matching, sigmoid focal classification, L1 and GIoU.

Follows the official SMCA-DETR (models/matcher.py, models/detr.py SetCriterion): the matcher's
class cost is the focal-loss difference ``alpha (1-p)^g (-log p) - (1-alpha) p^g (-log(1-p))`` at the
target class (alpha 0.25, gamma 2), plus L1 and negative GIoU box costs (weights 2 / 5 / 2), solved
with scipy's ``linear_sum_assignment``. Losses: sigmoid focal loss over all K+1 logits summed and
divided by the number of target boxes (weight 2), L1 (5) and 1 - GIoU (2) on matched pairs, and the
same for every auxiliary decoder layer (suffix ``_i``). Targets: per image ``labels`` (N,) and
``boxes`` (N, 4) normalised (cx, cy, w, h).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

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
    def forward(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
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
        matched_cls = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).long()
        onehot[batch_idx, src_idx, matched_cls] = 1.0
        loss_ce = sigmoid_focal_loss(logits, onehot, alpha=ALPHA, gamma=GAMMA, reduction="sum") / num_boxes
        src_boxes = outputs["pred_boxes"][batch_idx, src_idx]
        tgt_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(src_boxes)
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
