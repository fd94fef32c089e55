"""Seeded synthetic data with exact ground truth (pure numpy/scipy; no napari, no torch)."""

from __future__ import annotations

from napari_medvit.synthetic.brain import BrainCase, brain_template, generate_brain_case, generate_brain_dataset
from napari_medvit.synthetic.dementia import DementiaCase, generate_dementia_case, generate_dementia_dataset
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
    "BrainCase",
    "DementiaCase",
    "brain_template",
    "generate_brain_case",
    "generate_brain_dataset",
    "generate_dementia_case",
    "generate_dementia_dataset",
    "MAX_POLYPS",
    "POLYP_AREA_RANGE",
    "SAMPLE_FRAME_SEED",
    "SAMPLE_FRAME_SHAPE",
    "EndoscopyFrame",
    "generate_endoscopy_dataset",
    "generate_endoscopy_frame",
]
