"""The one input pipeline (transforms.prepare): what inference and every training task feed the models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medvit.transforms.prepare import (
    prepare_frame,
    prepare_frames,
    prepare_volume,
    prepare_volume_classifier,
    restore_frames,
    restore_volume,
    unit_frames,
)
from napari_medvit.transforms.preprocessing import Preprocessing

RGB = Preprocessing.from_dict({"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.1], "color": "rgb", "size_multiple": 32})


def test_frames_are_scaled_normalised_and_resized() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (50, 70, 4), dtype=np.uint8)  # RGBA: alpha dropped
    unit = unit_frames(frame, rgb=True)
    assert unit.shape == (50, 70, 3) and unit.dtype == np.float32
    np.testing.assert_allclose(unit, frame[..., :3] / 255.0, atol=1e-6)
    out = prepare_frames(unit[None], RGB, 3, rgb=True, size=None)
    assert out.x.shape == (1, 3, 64, 96) and not out.grid.resized  # padded up to multiples of 32
    np.testing.assert_allclose(out.x[0, 1, :50, :70].numpy(), (unit[..., 1] - 0.4) / 0.2, atol=1e-5)
    resized = prepare_frames(unit[None], RGB, 3, rgb=True, size=(32, 40))
    assert resized.x.shape == (1, 3, 32, 40) and resized.grid.image_size == (50, 70)
    # maps over the model input come back on the frames' grid, either way
    assert restore_frames(torch.rand(1, 2, 16, 20), resized.grid).shape == (1, 2, 50, 70)
    back = restore_frames(out.x, out.grid)
    np.testing.assert_allclose(back[0, 0], (unit[..., 0] - 0.5) / 0.25, atol=1e-5)  # padding cropped away


def test_grey_frames_follow_the_model_channels() -> None:
    grey = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(1, 32, 32)
    x = prepare_frames(grey, RGB, 3, rgb=False).x
    assert x.shape == (1, 3, 32, 32)  # "rgb": the grey channel replicated
    np.testing.assert_allclose(x[0, 2].numpy(), (grey[0] - 0.3) / 0.1, atol=1e-5)
    with pytest.raises(ValueError, match="expects 3 channel\\(s\\), the image gives 1"):
        prepare_frames(grey, Preprocessing(), 3, rgb=False)
    with pytest.raises(ValueError, match="case c7: a 2D model needs a 2D image; got an array of shape \\(4, 8, 8\\)"):
        prepare_frame(np.zeros((4, 8, 8), np.uint8), False, RGB, 3, (8, 8), what="case c7")


def test_training_augments_the_batch_and_its_targets_together() -> None:
    unit = np.random.default_rng(1).random((4, 32, 32, 3), dtype=np.float32)
    masks = torch.from_numpy(unit[..., :1].transpose(0, 3, 1, 2).copy())  # a target equal to a channel
    plain = prepare_frames(unit, Preprocessing(), 3, rgb=True)
    with pytest.raises(ValueError, match="needs the batch's torch.Generator"):
        prepare_frames(unit, Preprocessing(), 3, rgb=True, is_training=True, augment="flips")
    flipped = prepare_frames(unit, Preprocessing(), 3, rgb=True, is_training=True, augment="flips",
                             gen=torch.Generator().manual_seed(3), targets=[masks])
    assert not torch.equal(flipped.x, plain.x)  # some samples flipped
    torch.testing.assert_close(flipped.x[:, :1], flipped.targets[0])  # the target moved with its image


def test_volumes_by_window_or_percentiles_and_on_the_model_grid() -> None:
    rng = np.random.default_rng(2)
    ct = rng.normal(0, 300, (2, 8, 10, 12)).astype(np.float32)
    window = Preprocessing.from_dict({"intensity": {"window": [-175, 250], "range": [0, 1], "clip": True},
                                      "mean": [0.1], "std": [0.5]})
    x = prepare_volume(ct, window).x
    np.testing.assert_allclose(x, (np.clip((ct + 175) / 425, 0, 1) - 0.1) / 0.5, atol=1e-5)
    robust = prepare_volume(ct, Preprocessing()).x  # each channel on its own 0.5/99.5 percentiles
    assert robust.shape == ct.shape and robust.min() == 0.0 and robust.max() == 1.0
    # a model that asks for 2 mm voxels: resampled, labels by nearest neighbour, results mapped back exactly
    labels = (ct[:1] > 0).astype(np.uint8)
    grid = Preprocessing.from_dict({"pixdim": [2.0, 2.0, 2.0]})
    prepared = prepare_volume(ct, grid, np.eye(4), labels=labels)
    assert prepared.x.shape == (2, 4, 5, 6) and prepared.labels.shape == (1, 4, 5, 6)
    assert set(np.unique(prepared.labels)) <= {0, 1}
    assert restore_volume(prepared.labels[0], prepared).shape == (8, 10, 12)
    assert prepare_volume(ct, grid).undo is None  # without the image's affine nothing is resampled


def test_a_classifier_volume_is_resampled_to_its_input_size() -> None:
    vol = np.random.default_rng(3).normal(100, 20, (20, 24, 28)).astype(np.float32)
    x = prepare_volume_classifier(vol, Preprocessing.from_dict({"resize3d": [16, 16, 16]}))
    assert x.shape == (1, 1, 16, 16, 16) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert prepare_volume_classifier(vol, Preprocessing()).shape == (1, 1, 20, 24, 28)
