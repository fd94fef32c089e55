"""Seeded synthetic data with exact ground truth (pure numpy/scipy; no napari, no torch)."""

from __future__ import annotations

from napari_medvit.synthetic.endoscopy import (
    MAX_POLYPS,
    POLYP_AREA_RANGE,
    SAMPLE_FRAME_SEED,
    SAMPLE_FRAME_SHAPE,
    EndoscopyFrame,
    generate_endoscopy_dataset,
    generate_endoscopy_frame,
)

__all__ = [
    "MAX_POLYPS",
    "POLYP_AREA_RANGE",
    "SAMPLE_FRAME_SEED",
    "SAMPLE_FRAME_SHAPE",
    "EndoscopyFrame",
    "generate_endoscopy_dataset",
    "generate_endoscopy_frame",
]
