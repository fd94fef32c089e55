"""The loop of issue 4 in the viewer: run, correct, accept, export, fine-tune, promote, run again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medvit._layers import ORIGINAL_KEY
from napari_medvit.io import META_KEY, ImageMeta
from napari_medvit.models import create_model
from napari_medvit.models.checkpoint import Manifest, save_checkpoint
from napari_medvit.synthetic import generate_endoscopy_frame
from napari_medvit.training.export import mask_metrics
from napari_medvit.widgets import CorrectionsWidget, FinetuneWidget

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def test_correct_export_finetune_promote_and_the_prediction_moves_toward_the_correction(
        make_napari_viewer, qtbot, tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = create_model("transfuse_tiny")
    base_ckpt = save_checkpoint(base, tmp_path / "base.safetensors",
                                Manifest(arch="transfuse_tiny", config=base.config))
    viewer = make_napari_viewer()
    _, runner = viewer.window.add_plugin_dock_widget("napari-medvit", "MedViT inference")
    runner.use_checkpoint(base_ckpt)
    runner.model.value = "transfuse_tiny"
    corrections = CorrectionsWidget(viewer)
    corrections.folder.value = tmp_path / "export"

    frames = [generate_endoscopy_frame(s, shape=(64, 64), n_polyps=1) for s in range(6)]
    before = []
    for i, f in enumerate(frames):
        image = viewer.add_image(f.image, rgb=True, name=f"frame {i}",
                                 metadata={META_KEY: ImageMeta.identity(2, rgb=True).to_dict()})
        runner.run(layer=image)
        qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
        mask = viewer.layers["TransFuse mask"]  # trained weights: no [untrained] suffix
        assert ORIGINAL_KEY in mask.metadata
        before.append(mask_metrics(mask.metadata[ORIGINAL_KEY], f.mask)["dice"])
        mask.data = f.mask.astype(mask.data.dtype)  # the clinician's correction
        corrections.layer.value = mask
        corrections.case.value = f"frame-{i}"
        corrections.accept()
        assert corrections.export() is not None, corrections.message.value
        mask.name = f"corrected {i}"  # keep it: the next run adds its own layer

    tuner = FinetuneWidget(viewer)
    tuner.dataset.value, tuner.out.value, tuner.base.value = tmp_path / "export", tmp_path / "run", base_ckpt
    tuner.model.value, tuner.epochs.value, tuner.batch.value, tuner.lr.value = "transfuse_tiny", 15, 2, 3e-3
    tuner.augment.value = "none"
    tuner.val.value = 0.35  # 6 frames: 2 validate (MIN_VALIDATION_CASES), 4 train
    tuner.start()
    qtbot.waitUntil(lambda: not tuner.running, timeout=240_000)
    assert tuner.result is not None and tuner.result.promoted, tuner.status.value
    assert runner._checkpoint_path() == tuner.result.version  # the inference dock now uses the new version

    after = []
    for i, f in enumerate(frames):
        runner.run(layer=viewer.layers[f"frame {i}"])
        qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
        new_mask = next(layer for layer in reversed(viewer.layers) if layer.name.startswith("TransFuse mask"))
        assert new_mask.metadata["medvit_prediction"]["trained"] is True
        after.append(mask_metrics(new_mask.data, f.mask)["dice"])
    print(f"Dice to the corrections before {np.round(before, 3)}, after {np.round(after, 3)}")
    assert np.mean(after) > np.mean(before) + 0.3, (before, after)
