from __future__ import annotations

import torch

from napari_medvit.transforms.augment import affine, augment_2d, flips, intensity


def _blob_batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.zeros(n, 1, 48, 64)
    for i in range(n):
        m[i, :, 5 + i:20 + 2 * i, 10 + 3 * i:30 + 3 * i] = 1  # off-centre boxes: flips and rotations move them
    return m.expand(-1, 3, -1, -1).clone(), m


def test_flips_move_image_and_mask_together() -> None:
    x, m = _blob_batch()
    fx, (fm,) = flips(x, [m], torch.Generator().manual_seed(3))
    assert torch.equal(fx[:, :1], fm)  # the image channel that equals the mask still equals it
    assert not torch.equal(fm, m)  # with 4 samples x 2 axes, seed 3 flips something
    assert torch.equal(fm.sum(dim=(1, 2, 3)), m.sum(dim=(1, 2, 3)))


def test_rotation_and_scaling_keep_masks_binary_and_aligned() -> None:
    x, m = _blob_batch()
    ax, (am,) = affine(x, [m], torch.Generator().manual_seed(0))
    assert set(am.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(am, m)
    inter = ((ax[:, :1] > 0.5) & (am > 0.5)).sum()
    union = ((ax[:, :1] > 0.5) | (am > 0.5)).sum()
    assert float(inter) / float(union) > 0.9  # the bilinear image and the nearest mask stay on each other


def test_intensity_jitter_changes_only_the_image_statistics() -> None:
    x = torch.randn(4, 3, 16, 16)
    y = intensity(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and not torch.allclose(x, y)
    corr = torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1]
    assert corr > 0.95  # a per-sample affine change of intensity, not noise


def test_augmentation_is_reproducible_and_none_is_identity() -> None:
    x, m = _blob_batch()
    a = augment_2d(x, [m], torch.Generator().manual_seed(7), "standard")
    b = augment_2d(x, [m], torch.Generator().manual_seed(7), "standard")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1][0], b[1][0])
    same = augment_2d(x, [m], torch.Generator().manual_seed(7), "none")
    assert same[0] is x and same[1][0] is m
