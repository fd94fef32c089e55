"""Errors raised by the readers and writers of :mod:`napari_medvit.io`."""

from __future__ import annotations


class MedVitReadError(ValueError):
    """A file or folder could not be read as a medical image.

    The message always names the offending path and what was wrong with it.
    """
