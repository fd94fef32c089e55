"""The procedural colonoscopy generator: determinism, exact ground truth, realism cues."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage import io
from skimage.measure import label, regionprops

from napari_medvit.synthetic import (
    MAX_POLYPS,
    POLYP_AREA_RANGE,
    SAMPLE_FRAME_SEED,
    SAMPLE_FRAME_SHAPE,
    EndoscopyFrame,
    generate_endoscopy_dataset,
    generate_endoscopy_frame,
)

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"
SEEDS = list(range(10))


@pytest.fixture(scope="module")
def frames() -> list[EndoscopyFrame]:
    return [generate_endoscopy_frame(seed) for seed in SEEDS]


@pytest.fixture(scope="module")
def single_polyp_frames() -> list[EndoscopyFrame]:
    return [generate_endoscopy_frame(seed, n_polyps=1) for seed in SEEDS]


def _component_boxes(mask: np.ndarray) -> list[tuple[float, ...]]:
    return sorted(tuple(float(v) for v in r.bbox) for r in regionprops(label(mask, connectivity=2)))


# -- determinism, shapes ------------------------------------------------------------------------


def test_same_seed_gives_identical_frames() -> None:
    a, b = generate_endoscopy_frame(123), generate_endoscopy_frame(123)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.present == b.present
    assert a.seed == 123


def test_different_seeds_differ() -> None:
    a, b = generate_endoscopy_frame(1, n_polyps=1), generate_endoscopy_frame(2, n_polyps=1)
    assert not np.array_equal(a.image, b.image)
    assert not np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("shape", [(288, 384), (128, 160), (256, 256)])
def test_shapes_and_dtypes(shape: tuple[int, int]) -> None:
    f = generate_endoscopy_frame(7, shape)
    assert f.image.shape == (*shape, 3) and f.image.dtype == np.uint8
    assert f.mask.shape == shape and f.mask.dtype == np.uint8
    assert f.boxes.ndim == 2 and f.boxes.shape[1] == 4 and f.boxes.dtype == np.float64
    assert isinstance(f.present, bool)


def test_default_shape() -> None:
    assert generate_endoscopy_frame(0).image.shape == (288, 384, 3)


# -- ground truth -------------------------------------------------------------------------------


def test_mask_binary_and_nonempty_iff_present(frames: list[EndoscopyFrame]) -> None:
    counts = set()
    for f in frames:
        assert set(np.unique(f.mask).tolist()) <= {0, 1}
        assert f.present == bool(f.mask.any()) == (len(f.boxes) > 0)
        counts.add(len(f.boxes))
    assert counts - {0} and max(counts) <= 3  # n_polyps=None draws 0..3


def test_boxes_match_connected_components(frames: list[EndoscopyFrame]) -> None:
    for f in frames:
        assert _component_boxes(f.mask) == sorted(map(tuple, f.boxes.tolist()))
        # one polyp = one blob whatever the connectivity
        assert label(f.mask, connectivity=1).max() == label(f.mask, connectivity=2).max() == len(f.boxes)


@pytest.mark.parametrize("n", [0, 1, 2, 3, MAX_POLYPS])
def test_requested_polyp_count(n: int) -> None:
    for seed in (3, 4):
        f = generate_endoscopy_frame(seed, n_polyps=n)
        assert label(f.mask, connectivity=2).max() == n == len(f.boxes)
        assert f.present == (n > 0)


def test_no_polyp_gives_empty_mask() -> None:
    f = generate_endoscopy_frame(5, n_polyps=0)
    assert not f.mask.any()
    assert f.boxes.shape == (0, 4)
    assert f.present is False


def test_polyp_area_fraction_in_documented_range(frames: list[EndoscopyFrame],
                                                 single_polyp_frames: list[EndoscopyFrame]) -> None:
    lo, hi = POLYP_AREA_RANGE
    fractions = []
    for f in frames + single_polyp_frames:
        lab = label(f.mask, connectivity=2)
        fractions += [r.area / f.mask.size for r in regionprops(lab)]
    assert fractions
    assert min(fractions) >= lo * 0.95, fractions
    assert max(fractions) <= hi * 1.02, fractions
    # single polyps span a real range of sizes
    singles = [f.mask.mean() for f in single_polyp_frames]
    assert max(singles) / min(singles) > 2.0


def test_polyps_inside_the_field_of_view(frames: list[EndoscopyFrame]) -> None:
    for f in frames:
        assert f.image[f.mask.astype(bool)].max(axis=-1).min() > 10  # no polyp pixel is black
        corners = f.image[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.max() <= 5  # the endoscope's black corner mask


# -- realism cues -------------------------------------------------------------------------------


def test_polyps_differ_in_colour_from_surrounding_mucosa(frames: list[EndoscopyFrame],
                                                         single_polyp_frames: list[EndoscopyFrame]) -> None:
    """Mean chromaticity log(G/R) inside each polyp differs from a ring 3-12 px around it."""
    checked = 0
    for f in frames + single_polyp_frames:
        img = f.image.astype(float)
        not_highlight = img.min(axis=-1) < 170
        lit = img.sum(axis=-1) > 30
        lab = label(f.mask, connectivity=2)
        for r in regionprops(lab):
            m = lab == r.label
            ring = ndimage.binary_dilation(m, iterations=12) & ~ndimage.binary_dilation(m, iterations=3)
            ring &= (f.mask == 0) & lit & not_highlight
            inner, outer = img[m & not_highlight].mean(axis=0), img[ring].mean(axis=0)
            chroma = abs(np.log((inner[1] + 1) / (inner[0] + 1)) - np.log((outer[1] + 1) / (outer[0] + 1)))
            assert chroma > 0.06, (f.seed, r.label, inner, outer)
            checked += 1
    assert checked >= 10


def test_mucosa_is_pinkish_red(frames: list[EndoscopyFrame]) -> None:
    for f in frames:
        img = f.image.astype(float)
        bright = (img.sum(axis=-1) > 150) & (img.min(axis=-1) < 200) & (f.mask == 0)
        r, g, b = img[bright].mean(axis=0)
        assert r > g and r > b and r > 1.4 * g


def test_specular_highlights_exist(frames: list[EndoscopyFrame]) -> None:
    for f in frames:
        white = np.all(f.image >= 245, axis=-1)
        assert white.sum() >= 3, f.seed


def test_polyp_domes_carry_highlights(single_polyp_frames: list[EndoscopyFrame]) -> None:
    with_highlight = sum(bool(np.all(f.image[f.mask.astype(bool)] >= 240, axis=-1).any()) for f in single_polyp_frames)
    assert with_highlight >= 0.8 * len(single_polyp_frames)


def test_lumen_is_dark(frames: list[EndoscopyFrame]) -> None:
    for f in frames:
        grey = f.image.astype(float).mean(axis=-1)
        h, w = grey.shape
        inner = grey[h // 5: -h // 5, w // 5: -w // 5]
        assert inner.min() < 40  # the dark lumen is somewhere in the middle of the frame
        assert np.percentile(grey[grey > 5], 90) > 100  # and the near wall well lit


def test_frames_vary_across_seeds(frames: list[EndoscopyFrame]) -> None:
    means = np.array([f.image.reshape(-1, 3).mean(axis=0) for f in frames])
    assert np.ptp(means, axis=0).max() > 10


# -- speed --------------------------------------------------------------------------------------


def test_generation_is_fast() -> None:
    generate_endoscopy_frame(0)  # warm-up
    times = []
    for seed in range(3):
        t0 = time.perf_counter()
        generate_endoscopy_frame(seed)
        times.append(time.perf_counter() - t0)
    # designed for < 0.3 s on one core; generous bound for busy CI machines
    assert float(np.median(times)) < 1.0, times


# -- dataset ------------------------------------------------------------------------------------


def test_dataset_distinct_seeds_and_deterministic() -> None:
    a = generate_endoscopy_dataset(4, seed=9, shape=(128, 160))
    b = generate_endoscopy_dataset(4, seed=9, shape=(128, 160))
    assert len(a) == 4
    assert len({f.seed for f in a}) == 4
    for fa, fb in zip(a, b, strict=True):
        assert fa.seed == fb.seed
        np.testing.assert_array_equal(fa.image, fb.image)
        np.testing.assert_array_equal(fa.image, generate_endoscopy_frame(fa.seed, (128, 160)).image)
    assert [f.seed for f in generate_endoscopy_dataset(4, seed=10, shape=(128, 160))] != [f.seed for f in a]
    assert generate_endoscopy_dataset(0, seed=1) == []


# -- argument checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"seed": "3"}, "seed"),
    ({"seed": 0, "n_polyps": MAX_POLYPS + 1}, "n_polyps"),
    ({"seed": 0, "n_polyps": -1}, "n_polyps"),
    ({"seed": 0, "n_polyps": 1.0}, "n_polyps"),
    ({"seed": 0, "shape": (10, 10)}, "shape"),
    ({"seed": 0, "shape": (288,)}, "shape"),
    ({"seed": 0, "shape": (288, 384, 3)}, "shape"),
    ({"seed": 0, "shape": (288.5, 384)}, "shape"),
])
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_endoscopy_frame(**kwargs)


def test_invalid_dataset_size() -> None:
    with pytest.raises(ValueError, match="n must"):
        generate_endoscopy_dataset(-1, seed=0)


# -- the committed sample frame -----------------------------------------------------------------


def test_committed_sample_frame_matches_generator() -> None:
    """sample_data/endoscopy_polyp*.png == scripts/make_sample_data.py output (regenerate if not)."""
    image_path, mask_path = SAMPLE_DIR / "endoscopy_polyp.png", SAMPLE_DIR / "endoscopy_polyp_mask.png"
    assert image_path.is_file() and mask_path.is_file()
    frame = generate_endoscopy_frame(SAMPLE_FRAME_SEED, SAMPLE_FRAME_SHAPE, n_polyps=1)
    image, mask = io.imread(image_path), io.imread(mask_path)
    assert image.shape == frame.image.shape and image.dtype == np.uint8
    assert mask.shape == frame.mask.shape and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, frame.mask)
    assert set(np.unique(mask).tolist()) == {0, 1}
    # bit-exact here; allow 1-level rounding noise from another platform's floating point
    diff = np.abs(image.astype(int) - frame.image.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    # the sample shows exactly one medium-sized polyp
    assert label(mask).max() == 1
    assert 0.06 <= mask.mean() <= 0.18
