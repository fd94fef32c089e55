"""Agreement of a corrected result with the model's, and its one-line description.

- mask: Dice, IoU, HD95 (MONAI; in mm when the mask's geometry gives its spacing), edited voxels.
- boxes: Hungarian matched-box IoU, added / removed / moved / unchanged (and relabelled) boxes.
- class: changed or not, the model's probability of the chosen (and of its predicted) class; for a
  per-slice result, of one slice, with the count of changed slices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_medvit.corrections.records import Correction
from napari_medvit.models._compat import keep_triton_out_without_cuda


def agreement(record: Correction, slice_index: int = 0) -> dict[str, Any]:
    """The agreement of a corrected result with the model's (see the module docstring); for a
    per-slice classification, of slice ``slice_index``, plus the count of changed slices.
    Raises ValueError (or KeyError, for a record without the model's side) naming the problem."""
    keep_triton_out_without_cuda()  # torch, torchvision and MONAI come next (see models._compat)
    from napari_medvit.training.export import box_agreement, mask_metrics

    if record.kind == "mask":
        return mask_metrics(record.original, np.asarray(record.corrected), record.spacing)
    if record.kind == "boxes":
        original = record.original
        return box_agreement(original["boxes"], record.boxes(), original_classes=list(original.get("classes", [])),
                             corrected_classes=record.box_classes())
    return _class_agreement(record.class_record(), slice_index)


def _class_agreement(record: dict[str, Any], slice_index: int) -> dict[str, Any]:
    names, p = record["class_names"], record["probabilities"]
    if record.get("per_slice"):
        chosen_all, predicted_all = record["chosen"], record["predicted"]
        i = int(slice_index)
        if not 0 <= i < len(predicted_all):
            raise ValueError(f"slice {i} is out of range: the result has {len(predicted_all)} slices")
        chosen, predicted, p = int(chosen_all[i]), int(predicted_all[i]), p[i]
        extra = {"slice": i, "n_slices": len(predicted_all),
                 "changed_slices": int(sum(int(c) != int(q) for c, q in zip(chosen_all, predicted_all, strict=True)))}
    else:
        chosen, predicted, extra = int(record["chosen"]), int(record["predicted"]), {}
    return {"predicted": names[predicted], "chosen": names[chosen], "changed": chosen != predicted,
            "probability": float(p[chosen]), "predicted_probability": float(p[predicted]), **extra}


def describe(kind: str, m: dict[str, Any], spacing: bool = False) -> str:
    """One line for the agreement ``m`` of a ``kind`` result (``spacing``: a mask's HD95 is in mm)."""
    if kind == "mask":
        hd = "–" if m["hd95"] is None else f"{m['hd95']:.1f}{' mm' if spacing else ' px'}"
        return f"Dice {m['dice']:.3f} · IoU {m['iou']:.3f} · HD95 {hd} · {m['edited_voxels']} edited"
    if kind == "boxes":
        iou = "–" if m["mean_iou"] is None else f"{m['mean_iou']:.3f}"
        return (f"matched IoU {iou} ({m['matched']} pairs) · {m['moved']} moved · {m['added']} added · "
                f"{m['removed']} removed · {m['unchanged']} unchanged"
                + (f" · {m['relabelled']} relabelled" if m.get("relabelled") else ""))
    if kind != "class":
        raise ValueError(f"describe takes a 'mask', 'boxes' or 'class' agreement, not {kind!r}")
    change = f"changed: {m['predicted']} → {m['chosen']}" if m["changed"] else "unchanged"
    text = f"{change} · model's P({m['chosen']}) {m['probability']:.1%}"
    if "slice" in m:
        text = f"slice {m['slice']}: {text} · {m['changed_slices']} of {m['n_slices']} slices changed"
    return text


def describe_record(record: Correction, m: dict[str, Any]) -> str:
    """:func:`describe` for the agreement ``m`` of ``record``."""
    return describe(record.kind, m, spacing=record.spacing is not None)
