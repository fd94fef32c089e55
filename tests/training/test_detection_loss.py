from __future__ import annotations

import torch

from napari_medvit.models.smca_detr import smca_detr_tiny
from napari_medvit.training.detection import HungarianMatcher, SetCriterion


def _outputs(boxes: torch.Tensor, labels: torch.Tensor, k: int = 2, confident: float = 12.0) -> dict:
    logits = torch.full((1, len(boxes), k + 1), -confident)
    logits[0, torch.arange(len(boxes)), labels] = confident
    return {"pred_logits": logits, "pred_boxes": boxes[None].clone()}


def test_matcher_finds_the_obvious_assignment() -> None:
    preds = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2], [0.5, 0.1, 0.1, 0.1]])
    out = _outputs(preds, torch.tensor([0, 1, 0]))
    targets = [{"labels": torch.tensor([1, 0]), "boxes": torch.tensor([[0.71, 0.69, 0.2, 0.2], [0.21, 0.2, 0.1, 0.1]])}]
    (rows, cols), = HungarianMatcher()(out, targets)
    assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == {0: 1, 1: 0}


def test_perfect_predictions_have_near_zero_loss_and_aux_layers_are_counted() -> None:
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2]])
    labels = torch.tensor([1, 0])
    out = _outputs(boxes, labels)
    out["aux_outputs"] = [_outputs(boxes + 0.05, labels)]
    losses = SetCriterion(num_classes=2)(out, [{"labels": labels, "boxes": boxes}])
    assert losses["loss_bbox"] < 1e-6 and losses["loss_giou"] < 1e-6 and losses["loss_ce"] < 1e-6
    assert losses["loss_bbox_0"] > 0.1  # the shifted auxiliary boxes cost something
    weights = {"loss_ce": 2, "loss_bbox": 5, "loss_giou": 2}
    expected = sum(w * (losses[k] + losses[f"{k}_0"]) for k, w in weights.items())
    torch.testing.assert_close(losses["loss"], expected)


def test_loss_trains_the_tiny_model_towards_a_box() -> None:
    torch.manual_seed(0)
    model = smca_detr_tiny(dropout=0.0).train()
    crit = SetCriterion(num_classes=2)
    x = torch.randn(1, 3, 128, 160)
    target = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.4, 0.3, 0.2]])}]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)  # the official settings
    first = None
    for _ in range(25):
        loss = crit(model.forward_all(x), target)["loss"]
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
    assert float(loss) < 0.8 * first
