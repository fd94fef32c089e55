"""``python -m napari_medvit.cli ...`` (e.g. under ``torchrun``): the ``medvit`` command line."""

from __future__ import annotations

from napari_medvit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
