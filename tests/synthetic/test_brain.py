"""The synthetic brain MRI generator (MNI152-based FLAIR + T1 with WMH-like lesions)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label

from napari_medvit.synthetic.brain import (
    LESION_VOLUME_RANGE_ML,
    MAX_LESIONS,
    SIDE_MULTIPLE,
    BrainCase,
    _atlas,
    _synthesize,
    brain_template,
    generate_brain_case,
    generate_brain_dataset,
)

SPACING = 3.0  # 64 x 64 x 64 voxels: fast
SEEDS = list(range(10))


@pytest.fixture(scope="module")
def cases() -> list[BrainCase]:
    return [generate_brain_case(seed, spacing=SPACING) for seed in SEEDS]


@pytest.fixture(scope="module")
def with_fields() -> list[tuple[BrainCase, dict[str, np.ndarray]]]:
    return [_synthesize(seed, SPACING, None) for seed in (0, 1, 2, 4)]


def _wm_level(img: np.ndarray, where: np.ndarray) -> float:
    return float(np.mean(img[where]))


# -- determinism --------------------------------------------------------------------------------


def test_same_seed_gives_identical_cases() -> None:
    a = generate_brain_case(11, spacing=SPACING)
    b = generate_brain_case(11, spacing=SPACING)
    np.testing.assert_array_equal(a.flair, b.flair)
    np.testing.assert_array_equal(a.t1, b.t1)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.params == b.params
    assert a.seed == 11 and a.params["seed"] == 11


def test_different_seeds_differ(cases: list[BrainCase]) -> None:
    a, b = cases[0], cases[1]
    assert not np.array_equal(a.flair, b.flair)
    assert not np.array_equal(a.t1, b.t1)
    assert not np.array_equal(a.mask, b.mask)
    assert a.params["deformation"] != b.params["deformation"]
    # the subjects' shapes differ, not only the noise
    assert not np.array_equal(a.flair > 0, b.flair > 0)


def test_same_subject_at_every_spacing() -> None:
    a = generate_brain_case(4, spacing=3.0)
    b = generate_brain_case(4, spacing=4.0)
    assert a.params["deformation"] == b.params["deformation"]
    assert a.params["n_lesions"] == b.params["n_lesions"]
    ka = [le["kind"] for le in a.params["lesions"]]
    assert ka == [le["kind"] for le in b.params["lesions"]]
    # lesion centres are the same RAS points
    for la, lb in zip(a.params["lesions"], b.params["lesions"], strict=True):
        ra = a.affine @ np.r_[la["centre_zyx"], 1.0]
        rb = b.affine @ np.r_[lb["centre_zyx"], 1.0]
        np.testing.assert_allclose(ra, rb, atol=1e-6)


# -- shapes, grid, affine -----------------------------------------------------------------------


@pytest.mark.parametrize("spacing, shape", [(3.0, (64, 64, 64)), (4.0, (48, 48, 48)), (2.0, (80, 96, 80))])
def test_shapes_dtypes_spacing_affine(spacing: float, shape: tuple[int, int, int]) -> None:
    c = generate_brain_case(3, spacing=spacing, n_lesions=2)
    assert c.flair.shape == c.t1.shape == c.mask.shape == shape
    assert all(side % SIDE_MULTIPLE == 0 for side in shape)
    assert c.flair.dtype == np.float32 and c.t1.dtype == np.float32 and c.mask.dtype == np.uint8
    assert c.spacing == (spacing, spacing, spacing)
    assert c.affine.shape == (4, 4) and c.affine.dtype == np.float64
    # (z, y, x) indices -> RAS: z superior, y anterior, x right, all with the voxel size
    np.testing.assert_allclose(c.affine[:3, :3], [[0, 0, spacing], [0, spacing, 0], [spacing, 0, 0]])
    np.testing.assert_array_equal(c.affine[3], [0, 0, 0, 1])
    tpl, aff = brain_template(spacing)
    assert tpl.shape == shape
    np.testing.assert_array_equal(c.affine, aff)


def test_brain_centroid_sits_at_its_mni_coordinates(cases: list[BrainCase]) -> None:
    """The centre of the brain maps to the MNI152 brain centre (about (0, -20, 10) mm)."""
    for c in cases[:3]:
        com = np.array(ndimage.center_of_mass(c.flair > 0))
        x, y, z = (c.affine @ np.r_[com, 1.0])[:3]
        assert abs(x) < 6 and -32 < y < -8 and 0 < z < 22, (c.seed, x, y, z)


def test_brain_template_cached_readonly_and_on_the_grid() -> None:
    tpl, aff = brain_template(SPACING)
    assert brain_template(SPACING)[0] is tpl  # cached
    assert not tpl.flags.writeable
    assert tpl.dtype == np.float32 and 0.0 <= tpl.min() and tpl.max() <= 255.0
    brain = tpl > 0
    assert 0.15 < brain.mean() < 0.6
    # background on every face but the lowest slice (the template cuts the brainstem there)
    for face in (tpl[-1], tpl[:, 0], tpl[:, -1], tpl[:, :, 0], tpl[:, :, -1]):
        assert not face.any()
    # the lesion-free subject is the template, deformed a little: it overlaps and correlates
    # strongly with it (after a small blur that forgives the few mm of deformation), not perfectly
    twin = generate_brain_case(2, spacing=SPACING, n_lesions=0)
    sub = twin.t1 > 0
    dice = 2.0 * np.sum(brain & sub) / (brain.sum() + sub.sum())
    assert 0.8 < dice < 0.995
    both = brain & sub
    a, b = ndimage.gaussian_filter(tpl, 1.0), ndimage.gaussian_filter(twin.t1, 1.0)
    assert np.corrcoef(a[both], b[both])[0, 1] > 0.7
    assert tpl[np.abs(tpl - 217) < 10].size > 1000  # white matter at its uint8 value


def test_brain_never_cut_by_the_grid(cases: list[BrainCase]) -> None:
    for c in cases:
        brain = c.flair > 0
        for face in (brain[-1], brain[:, 0], brain[:, -1], brain[:, :, 0], brain[:, :, -1]):
            assert not face.any(), c.seed
        assert brain[0].any()  # the cut brainstem on the first slice


# -- lesions: where, how bright, exact ground truth ---------------------------------------------


def test_mask_binary_and_inside_the_brain(cases: list[BrainCase]) -> None:
    for c in cases:
        assert set(np.unique(c.mask).tolist()) <= {0, 1}
        assert np.all(c.flair[c.mask > 0] > 0) and np.all(c.t1[c.mask > 0] > 0)
        assert math.isclose(c.params["lesion_volume_ml"], c.mask.sum() * SPACING**3 / 1000.0)


def test_lesions_lie_in_white_matter(with_fields: list[tuple[BrainCase, dict[str, np.ndarray]]]) -> None:
    checked = 0
    for c, fields in with_fields:
        m = c.mask > 0
        # exactly: the deformed template's white-matter membership is at least 0.5 on every lesion voxel
        assert np.all(fields["p_wm"][m] >= 0.5)
        checked += int(m.sum())
    assert checked > 100
    # and in the undeformed template: >= 95 % of lesion voxels within 2 voxels (6 mm, the
    # size of the deformation) of its white matter
    tpl, _ = brain_template(SPACING)
    wm = ndimage.binary_dilation(tpl > _atlas().t_wm, iterations=2)
    frac = np.mean(np.concatenate([wm[c.mask > 0] for c, _ in with_fields]))
    assert frac >= 0.95


def test_lesions_hyperintense_on_flair_hypointense_on_t1(
        with_fields: list[tuple[BrainCase, dict[str, np.ndarray]]]) -> None:
    for c, fields in with_fields:
        m = c.mask > 0
        assert m.sum() >= 5, c.seed
        wm = (fields["p_wm"] > 0.9) & ~ndimage.binary_dilation(m, iterations=2)
        assert _wm_level(c.flair, m) > 1.15 * _wm_level(c.flair, wm), c.seed
        assert _wm_level(c.t1, m) < 0.92 * _wm_level(c.t1, wm), c.seed
        assert 0.55 <= _wm_level(c.t1, wm) / c.params["intensity_scale"]["t1"] <= 1.4


def test_ground_truth_is_exact() -> None:
    """With the lesion-free twin (same seed, n_lesions=0: same anatomy, bias and noise), FLAIR
    and T1 change only in and right around the mask, fully inside it and less than half outside."""
    for seed in (0, 1, 6):
        c = generate_brain_case(seed, spacing=SPACING, n_lesions=8)
        twin = generate_brain_case(seed, spacing=SPACING, n_lesions=0)
        m = c.mask > 0
        assert m.any() and not twin.mask.any()
        changed = (c.flair != twin.flair) | (c.t1 != twin.t1)
        near = ndimage.binary_dilation(m, structure=np.ones((3, 3, 3)), iterations=2)
        assert not np.any(changed & ~near), seed  # nothing altered away from the mask
        assert np.all(changed[m])
        gains = [le["flair_gain"] for le in c.params["lesions"] if le["volume_ml"] > 0]
        ratio = c.flair / np.maximum(twin.flair, 1e-6)
        assert ratio[m].min() >= 1.0 + 0.45 * (min(gains) - 1.0), seed
        assert ratio[~m].max() <= 1.0 + 0.5 * (max(gains) - 1.0) + 0.03, seed
        assert np.median(ratio[m]) >= 1.0 + 0.8 * (min(gains) - 1.0)
        t_ratio = c.t1 / np.maximum(twin.t1, 1e-6)
        assert np.median(t_ratio[m]) <= 0.92


def test_no_lesion_case_is_empty_and_plausible() -> None:
    c = generate_brain_case(5, spacing=SPACING, n_lesions=0)
    assert not c.mask.any()
    assert c.params["n_lesions"] == 0 and c.params["lesions"] == [] and c.params["lesion_volume_ml"] == 0.0
    brain = c.flair > 0
    assert np.array_equal(brain, c.t1 > 0)
    assert np.all(c.flair[~brain] == 0) and np.all(c.t1[~brain] == 0)  # skull-stripped background
    assert np.isfinite(c.flair).all() and np.isfinite(c.t1).all()
    # FLAIR contrast: CSF (dark on T1) suppressed, grey matter brighter than white matter
    t1n = c.t1 / np.percentile(c.t1[brain], 90)
    csf, gm, wm = brain & (t1n < 0.45), brain & (t1n > 0.7) & (t1n < 0.8), brain & (t1n > 0.93)
    assert csf.sum() > 50 and gm.sum() > 500 and wm.sum() > 500
    f_csf, f_gm, f_wm = (float(np.median(c.flair[r])) for r in (csf, gm, wm))
    assert f_csf < 0.5 * f_wm < 0.5 * f_gm, (f_csf, f_gm, f_wm)
    assert f_wm < f_gm < 1.5 * f_wm


def test_lesion_counts_and_components(cases: list[BrainCase]) -> None:
    counts = [c.params["n_lesions"] for c in cases]
    assert 0 in counts and sum(n > 0 for n in counts) >= 7  # zero only now and then
    assert max(counts) <= MAX_LESIONS
    for c in cases:
        n = c.params["n_lesions"]
        assert len(c.params["lesions"]) == n
        assert label(c.mask, connectivity=1).max() <= n  # lesions may merge, never split
        assert bool(c.mask.any()) == (n > 0)


@pytest.mark.parametrize("n", [1, 5, MAX_LESIONS])
def test_requested_lesion_count(n: int) -> None:
    c = generate_brain_case(21, spacing=SPACING, n_lesions=n)
    assert c.params["n_lesions"] == n == len(c.params["lesions"])
    k = label(c.mask, connectivity=1).max()
    assert 1 <= k <= n
    assert label(c.mask, connectivity=3).max() <= k
    kinds = {le["kind"] for le in c.params["lesions"]}
    assert kinds <= {"periventricular", "deep"}
    if n == MAX_LESIONS:
        assert kinds == {"periventricular", "deep"}
        assert k >= 10


def test_lesion_volumes_in_documented_range(cases: list[BrainCase]) -> None:
    lo, hi = LESION_VOLUME_RANGE_ML
    vols = [c.params["lesion_volume_ml"] for c in cases if c.params["n_lesions"] > 0]
    assert len(vols) >= 7
    assert lo <= min(vols) and max(vols) <= hi, vols
    assert 1.0 <= float(np.median(vols)) <= 10.0  # "a few mL"
    single = [le["volume_ml"] for c in cases for le in c.params["lesions"] if le["volume_ml"] > 0]
    assert min(single) < 0.2 and max(single) > 1.0  # many small lesions, a few large ones


def test_periventricular_lesions_touch_the_ventricles(cases: list[BrainCase]) -> None:
    """Periventricular lesion centres are a few mm from the (dark) ventricles."""
    found = 0
    for c in cases:
        brain = c.flair > 0
        csf = brain & (c.t1 < 0.5 * np.percentile(c.t1[brain], 90))
        dist = ndimage.distance_transform_edt(~csf) * SPACING
        for le in c.params["lesions"]:
            if le["kind"] == "periventricular" and le["volume_ml"] > 0.05:
                z, y, x = np.round(le["centre_zyx"]).astype(int)
                assert dist[z, y, x] < 12.0, (c.seed, le)
                found += 1
    assert found >= 5


# -- dataset, speed, arguments ------------------------------------------------------------------


def test_dataset_distinct_seeds_and_deterministic() -> None:
    a = generate_brain_dataset(3, seed=9, spacing=4.0)
    b = generate_brain_dataset(3, seed=9, spacing=4.0)
    assert len(a) == 3 and len({c.seed for c in a}) == 3
    for ca, cb in zip(a, b, strict=True):
        assert ca.seed == cb.seed
        np.testing.assert_array_equal(ca.flair, cb.flair)
        np.testing.assert_array_equal(ca.mask, generate_brain_case(ca.seed, spacing=4.0).mask)
    assert [c.seed for c in generate_brain_dataset(3, seed=10, spacing=4.0)] != [c.seed for c in a]
    assert generate_brain_dataset(0, seed=1) == []


def test_generation_is_fast() -> None:
    generate_brain_case(0, spacing=2.0)  # warm-up (template cache at this spacing)
    times = []
    for seed in (1, 2):
        t0 = time.perf_counter()
        generate_brain_case(seed, spacing=2.0)
        times.append(time.perf_counter() - t0)
    # designed for ~0.4 s on one core; generous bound for busy CI machines
    assert min(times) < 3.0, times


@pytest.mark.parametrize("kwargs, match", [
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"seed": "3"}, "seed"),
    ({"seed": True}, "seed"),
    ({"seed": 0, "spacing": 0.5}, "spacing"),
    ({"seed": 0, "spacing": 5}, "spacing"),
    ({"seed": 0, "spacing": float("nan")}, "spacing"),
    ({"seed": 0, "spacing": "2"}, "spacing"),
    ({"seed": 0, "n_lesions": -1}, "n_lesions"),
    ({"seed": 0, "n_lesions": MAX_LESIONS + 1}, "n_lesions"),
    ({"seed": 0, "n_lesions": 2.0}, "n_lesions"),
])
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_brain_case(**kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda: generate_brain_dataset(-1), "n must"),
    (lambda: generate_brain_dataset(2, seed=-3), "seed"),
    (lambda: generate_brain_dataset(2, spacing=0.5), "spacing"),
    (lambda: brain_template(4.5), "spacing"),
])
def test_bad_arguments_raise_elsewhere(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
