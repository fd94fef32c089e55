"""The corrections core: result records, agreement metrics, export and autosave, without napari or Qt.

Three kinds of results are corrected, each beside the model's own output:

- mask: a run's label mask, repainted; the model's mask is kept beside it. Agreement: Dice, IoU,
  HD95 (MONAI), edited voxels. Export: nnU-Net layout.
- boxes: a detection run's boxes, moved, resized, deleted or drawn. Agreement: Hungarian matched-box
  IoU, added / removed / moved / unchanged boxes. Export: COCO ``annotations.json``.
- class: a classification of an image (of each slice, for a 2D classifier on a volume), with the
  class the user picked. Agreement: changed or not, the model's probability of the chosen class.
  Export: ``labels.csv`` (with DAFT's tabular row); a per-slice result exports each slice.

The docks translate napari layers to :class:`Correction` records (:mod:`.layers` reads any
layer-like object: :func:`correction_items`, :func:`record_of`, :func:`accepted_records`) and back
(:func:`restorable` says which layers to add). The layer-metadata keys
(``medvit_original``, ``medvit_prediction``, ``medvit_class_results``, ``medvit_review``) and the
on-disk formats are those the plugin always used.
"""

from __future__ import annotations

from napari_medvit.corrections.agreement import agreement, describe, describe_record
from napari_medvit.corrections.autosave import Restored, autosave, restorable
from napari_medvit.corrections.export import export_accepted, export_correction, provenance_record
from napari_medvit.corrections.layers import (
    ClassResult,
    accepted_records,
    class_correction,
    correction_items,
    correction_records,
    image_data,
    item_kind,
    layer_correction,
    layer_kind,
    layer_meta,
    record_class_result,
    record_of,
    source_image,
    source_path_of,
)
from napari_medvit.corrections.records import (
    REVIEW_KEY,
    Correction,
    SourceImage,
    case_id_of,
    choose_class,
    chosen_at,
    class_result_name,
    default_case_id,
    make_review,
    merge_class_result,
)

__all__ = [
    "REVIEW_KEY",
    "ClassResult",
    "Correction",
    "Restored",
    "SourceImage",
    "accepted_records",
    "agreement",
    "autosave",
    "case_id_of",
    "choose_class",
    "chosen_at",
    "class_correction",
    "class_result_name",
    "correction_items",
    "correction_records",
    "default_case_id",
    "describe",
    "describe_record",
    "export_accepted",
    "export_correction",
    "image_data",
    "item_kind",
    "layer_correction",
    "layer_kind",
    "layer_meta",
    "make_review",
    "merge_class_result",
    "provenance_record",
    "record_class_result",
    "record_of",
    "restorable",
    "source_image",
    "source_path_of",
]
