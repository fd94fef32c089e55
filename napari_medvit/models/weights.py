"""Which weights a model runs with when nobody chose a file: the user's, then the shipped ones.

Weights are found from their manifests (a .safetensors header, read without torch):

1. the user's weights folder — ``MEDVIT_WEIGHTS_DIR`` if set, else ``$XDG_DATA_HOME/napari-medvit/weights``
   (``~/.local/share/napari-medvit/weights``): official-configuration checkpoints converted with a manifest,
   fine-tuned versions copied there;
2. the checkpoints shipped with the plugin (``sample_data/checkpoints``: the demo configurations).

:func:`best_weights` picks, from a list of models in order of preference, the first that has weights:
the one-click "Run TransFuse" and ``medvit infer`` without ``--model`` use :data:`ONE_CLICK_TRANSFUSE`, so
an installation with official TransFuse weights runs them, and one without runs the demo weights rather
than an untrained network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_medvit.models.manifest import Manifest, bundled_checkpoints

# the paper's configurations first (the larger, the better in the paper), then the shipped demo configuration
ONE_CLICK_TRANSFUSE = ("transfuse_l_384", "transfuse_l", "transfuse_s", "transfuse_demo")


def user_weights_dir() -> Path:
    """The folder the user keeps weights in (it need not exist)."""
    folder = os.environ.get("MEDVIT_WEIGHTS_DIR")
    if folder:
        return Path(folder).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "napari-medvit" / "weights"


@dataclass(frozen=True)
class Weights:
    """A checkpoint found for a model: its file, its manifest, and whether it is the user's or shipped."""

    model: str
    path: Path
    manifest: Manifest
    origin: str  # "yours" | "bundled"

    @property
    def label(self) -> str:
        """How the dock and the CLI name it: ``yours: <description>`` or ``bundled: <description>``."""
        return f"{self.origin}: {self.manifest.description or self.path.stem}"


def available_weights(model: str) -> list[Weights]:
    """The weights found for ``model``: the user's folder first, then the shipped checkpoints."""
    found = [Weights(model, p, m, "yours") for p, m in bundled_checkpoints(model, user_weights_dir())]
    found += [Weights(model, p, m, "bundled") for p, m in bundled_checkpoints(model)]
    return found


def default_weights(model: str) -> Weights | None:
    """The weights ``model`` runs with when none are chosen (None: it has none, it would be untrained)."""
    found = available_weights(model)
    return found[0] if found else None


def best_weights(models: Sequence[str] = ONE_CLICK_TRANSFUSE) -> Weights | None:
    """The first of ``models`` (in order of preference) that has weights, with them."""
    for model in models:
        weights = default_weights(model)
        if weights is not None:
            return weights
    return None
