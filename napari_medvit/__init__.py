"""napari-medvit: a napari workbench for medical images with vision-transformer models.

This module only carries the version: it imports no Qt, no torch, no napari, so that
napari's start-up (which reads our manifest) stays fast.
"""

__version__ = "0.1.0"
