"""Default weights: the user's weights folder first, then the shipped checkpoints; never untrained by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_medvit.models import create_model
from napari_medvit.models.checkpoint import Manifest, save_checkpoint
from napari_medvit.models.weights import (
    ONE_CLICK_TRANSFUSE,
    available_weights,
    best_weights,
    default_weights,
    user_weights_dir,
)


def test_the_user_weights_folder_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDVIT_WEIGHTS_DIR", str(tmp_path / "mine"))
    assert user_weights_dir() == tmp_path / "mine"
    assert default_weights("transfuse_tiny") is None  # nothing shipped for the test configuration
    shipped = default_weights("transfuse_demo")
    assert shipped is not None and shipped.origin == "bundled" and shipped.path.name == "transfuse_demo.safetensors"
    assert shipped.label.startswith("bundled: DEMO")
    # no official TransFuse weights here: the one-click choice is the demo configuration
    assert ONE_CLICK_TRANSFUSE[:3] == ("transfuse_l_384", "transfuse_l", "transfuse_s")
    assert best_weights() == shipped

    model = create_model("transfuse_tiny")
    (tmp_path / "mine").mkdir()
    save_checkpoint(model, tmp_path / "mine" / "tiny.safetensors",
                    Manifest(arch="transfuse_tiny", config=model.config, description="my tiny weights"))
    mine = default_weights("transfuse_tiny")
    assert mine is not None and mine.origin == "yours" and mine.label == "yours: my tiny weights"
    assert best_weights(("transfuse_tiny", "transfuse_demo")) == mine  # preferred model with weights wins
    assert best_weights(("transfuse_s", "transfuse_demo")) == shipped
    assert [w.origin for w in available_weights("transfuse_demo")] == ["bundled"]


def test_without_the_variable_the_folder_is_in_the_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MEDVIT_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert user_weights_dir() == tmp_path / "napari-medvit" / "weights"
