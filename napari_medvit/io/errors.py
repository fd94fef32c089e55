"""Errors raised by the readers and writers of :mod:`napari_medvit.io`."""

from __future__ import annotations


class MedVitReadError(ValueError):
    """A file or folder could not be read as a medical image.

    The message always names the offending path and what was wrong with it, on one line
    (line breaks of the underlying libraries' messages are folded).
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))
