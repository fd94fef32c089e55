"""Export of corrected results for retraining, each case with its provenance record.

Masks go to an nnU-Net v2 / MSD folder (:func:`napari_medvit.training.export.export_case`), boxes to
COCO ``annotations.json`` (:func:`~napari_medvit.training.export.export_boxes_coco`), classes to
``labels.csv`` + images (:func:`~napari_medvit.training.export.export_class_label`, with DAFT's tabular
row); a per-slice classification exports each slice as a 2D case ``<case>_sNNN``. A case id that is
taken becomes a new version (``_v2`` ...), never an overwrite.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_medvit.corrections.agreement import agreement
from napari_medvit.corrections.records import Correction, SourceImage, default_case_id
from napari_medvit.io.meta import ImageMeta
from napari_medvit.models._compat import keep_triton_out_without_cuda


def provenance_record(provenance: dict[str, Any], reviewed: bool) -> dict[str, Any]:
    """The provenance kept with an exported case: model, weights, checkpoint digest, reviewed or not."""
    return {"model": provenance.get("model"), "weights": provenance.get("weights"),
            "checkpoint_sha256": provenance.get("checkpoint_sha256"), "reviewed": reviewed}


def _source(record: Correction) -> SourceImage:
    if record.source is not None:
        return record.source
    if record.kind == "class":
        raise ValueError(f"the image '{record.source_name}' is no longer open: cannot export it")
    raise ValueError(f"the source image '{record.provenance.get('source_layer')}' is no longer open: "
                     "cannot export its image")


def export_correction(record: Correction, folder: str | Path, case_id: str) -> tuple[str, Any]:
    """Export one corrected result into ``folder``; returns (the exported case id, what the exporter
    returned: an ExportedCase for a mask, the image path for boxes, labels.csv for a class).
    Raises ValueError (or OSError) naming the problem."""
    keep_triton_out_without_cuda()  # torch, torchvision and MONAI come next (see models._compat)
    from napari_medvit.training import export as ex

    source = _source(record)
    image = source.array()
    meta = record.meta or source.image_meta()
    if record.kind == "mask":
        names = record.provenance.get("class_names") or ["background", "foreground"]
        case = ex.export_case(folder, case_id, image, meta, np.asarray(record.corrected),
                              label_names={n: i for i, n in enumerate(names)}, original=record.original,
                              provenance=provenance_record(record.provenance, record.reviewed))
        return case.case_id, case
    if record.kind == "boxes":
        prov = record.provenance
        categories = record.categories()
        classes = record.box_classes(categories)
        info = {**provenance_record(prov, record.reviewed), "score_threshold": prov.get("threshold"),
                "source": prov.get("source_layer"), "original_vs_corrected": agreement(record)}
        path = ex.export_boxes_coco(folder, case_id, image, meta, record.boxes(), categories,
                                    [categories.index(c) for c in classes], provenance=info)
        return path.stem, path
    meta = source.image_meta()
    if record.per_slice:
        return _export_slices(record, image, meta, folder, case_id)
    m = agreement(record)
    prov = {**provenance_record(record.provenance, record.reviewed), "predicted": m["predicted"],
            "predicted_probability": m["predicted_probability"], "chosen_probability": m["probability"],
            "changed": m["changed"]}
    path = ex.export_class_label(folder, case_id, m["chosen"], image=image, meta=meta,
                                 tabular=record.original.get("tabular"), provenance=prov)
    with path.open(newline="") as f:
        exported = list(csv.DictReader(f))[-1]["case_id"]  # versioned (_v2 ...) when the id was taken
    return exported, path


def _export_slices(record: Correction, image: np.ndarray, meta: ImageMeta, folder: str | Path,
                   case_id: str) -> tuple[str, Path]:
    """A per-slice classification: every slice as a 2D case ``<case_id>_sNNN`` with its chosen class.

    Each slice is written as the model saw it: the predictor scales the whole volume to 0..1 (its
    0.5/99.5 percentiles) before slicing, so a slice is exported as 8-bit of that scaling (a slice
    scaled on its own would look different to the model in training than at inference)."""
    from napari_medvit.training import export as ex
    from napari_medvit.transforms import scale_to_unit

    result = record.class_record()
    lead = tuple(int(n) for n in result["slice_shape"])
    if not (meta.rgb or image.dtype == np.uint8):
        image = np.round(scale_to_unit(image) * 255).astype(np.uint8)
    planes = image.reshape(-1, *image.shape[len(lead):])
    if len(planes) != len(result["predicted"]):
        raise ValueError(f"the image has {len(planes)} slices but the classification has {len(result['predicted'])}")
    plane_meta = ImageMeta.identity(2, rgb=meta.rgb)
    if len(meta.spacing) >= 2:  # keep the in-plane pixel size
        plane_meta = replace(plane_meta, spacing=tuple(meta.spacing[-2:]))
    names = result["class_names"]
    width = max(3, len(str(len(planes) - 1)))
    path = Path(folder) / "labels.csv"
    for i, plane in enumerate(planes):
        m = agreement(record, i)
        prov = {**provenance_record(record.provenance, record.reviewed), "source_case": case_id, "slice": i,
                "predicted": m["predicted"], "predicted_probability": m["predicted_probability"],
                "chosen_probability": m["probability"], "changed": m["changed"]}
        path = ex.export_class_label(folder, f"{case_id}_s{i:0{width}d}", names[int(result["chosen"][i])],
                                     image=plane, meta=plane_meta, provenance=prov)
    return case_id, path


def export_accepted(records: Iterable[Correction], folder: str | Path, *,
                    errors: list[str] | None = None) -> list[str]:
    """Export every accepted (reviewed) one of ``records`` into ``folder`` under its default case id:
    masks in the nnU-Net layout, boxes to COCO ``annotations.json``, classes to ``labels.csv``.
    Returns the exported case ids. A correction that cannot be exported (its image was closed, ...)
    is left out with its reason appended to ``errors``, or given as one warning when no list is given."""
    exported, problems = [], []
    for record in records:
        if not record.reviewed:
            continue
        try:
            case, _ = export_correction(record, folder, default_case_id(record))
        except (ValueError, OSError) as exc:
            problems.append(f"{record.name}: {exc}")
            continue
        exported.append(case)
    if errors is not None:
        errors.extend(problems)
    elif problems:
        warnings.warn("MedViT: not exported — " + "; ".join(problems), UserWarning, stacklevel=2)
    return exported
