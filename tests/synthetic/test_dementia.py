"""The synthetic dementia generator (MNI152 T1 + ADNI tabular): determinism, ranges, atrophy, fusion."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_medvit.models._registry import ADNI_FEATURES
from napari_medvit.synthetic.dementia import (
    CLASSES,
    MISSING_RATES,
    TABULAR_FEATURES,
    TABULAR_RANGES,
    DementiaCase,
    generate_dementia_case,
    generate_dementia_dataset,
)

SMALL = (32, 32, 32)
BIOMARKERS = ("ABETA", "TAU", "PTAU", "FDG", "AV45")


@pytest.fixture(scope="module")
def cohort() -> list[DementiaCase]:
    """160 cases at 32^3 (about 10 s): shared by the statistical tests below."""
    return generate_dementia_dataset(160, seed=2024, shape=SMALL)


# -- helpers: what a simple analysis would measure ----------------------------------------------


def _dark_fractions(image: np.ndarray) -> tuple[float, float]:
    """CSF measured on the image: dark voxels in the brain's interior, and a soft CSF fraction,
    both relative to the brain volume (dark = below 55 % of the median brain intensity)."""
    brain = image > 0
    med = float(np.median(image[brain]))
    interior = ndimage.binary_erosion(ndimage.binary_fill_holes(brain), iterations=max(1, image.shape[0] // 16))
    dark = (image < 0.55 * med) & interior
    soft = np.clip((0.75 * med - image) / (0.4 * med), 0.0, 1.0) * brain
    n = float(brain.sum())
    return float(dark.sum()) / n, float(soft.sum()) / n


_Z = {"ABETA": (1000.0, -350.0), "AV45": (1.3, 0.2), "PTAU": (28.0, 12.0), "TAU": (300.0, 110.0)}


def _tabular_scores(tab: dict[str, float | None]) -> list[float]:
    """age, an amyloid score and a tau score (means of the available z-scored markers; 0 if none)."""
    def score(names: tuple[str, ...]) -> float:
        vals = [(tab[k] - _Z[k][0]) / _Z[k][1] for k in names if tab[k] is not None]  # type: ignore[operator]
        return float(np.mean(vals)) if vals else 0.0

    return [float(tab["age"]), score(("ABETA", "AV45")), score(("PTAU", "TAU"))]  # type: ignore[arg-type]


def _cv_balanced_accuracy(x: np.ndarray, y: np.ndarray, folds: int = 5) -> float:
    """5-fold cross-validated balanced accuracy of a multinomial logistic regression (numpy)."""
    order = np.random.default_rng(0).permutation(len(y))
    pred = np.empty_like(y)
    for test in np.array_split(order, folds):
        train = np.setdiff1d(order, test)
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-9
        a = np.c_[(x[train] - mu) / sd, np.ones(len(train))]
        b = np.c_[(x[test] - mu) / sd, np.ones(len(test))]
        w = np.zeros((a.shape[1], 3))
        onehot = np.eye(3)[y[train]]
        for _ in range(600):
            z = a @ w
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            w -= 0.5 * (a.T @ (p - onehot) / len(train) + 1e-3 * w)
        pred[test] = (b @ w).argmax(1)
    return float(np.mean([np.mean(pred[y == k] == k) for k in range(3) if np.any(y == k)]))


# -- determinism, shapes, API -------------------------------------------------------------------


def test_same_seed_gives_identical_cases() -> None:
    a, b = generate_dementia_case(123, shape=SMALL), generate_dementia_case(123, shape=SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.tabular == b.tabular and a.label == b.label and a.spacing == b.spacing
    assert a.params == b.params
    assert a.seed == 123


def test_different_seeds_differ() -> None:
    a, b = generate_dementia_case(1, shape=SMALL), generate_dementia_case(2, shape=SMALL)
    assert not np.array_equal(a.image, b.image)
    assert a.tabular != b.tabular


def test_default_shape_dtype_and_geometry() -> None:
    case = generate_dementia_case(5)
    assert case.image.shape == (64, 64, 64) and case.image.dtype == np.float32
    assert np.isfinite(case.image).all() and case.image.min() >= 0.0
    assert case.label in CLASSES
    # the 159 x 189 x 153 mm crop of the template fills the volume
    np.testing.assert_allclose(case.spacing, (159 / 64, 189 / 64, 153 / 64))
    brain = case.image > 0
    assert 0.25 < brain.mean() < 0.75
    for axis in range(3):
        other = tuple(i for i in range(3) if i != axis)
        present = np.flatnonzero(brain.any(axis=other))
        assert (present[-1] - present[0] + 1) >= 0.85 * case.image.shape[axis]


@pytest.mark.parametrize("shape", [(16, 16, 16), (24, 40, 20)])
def test_other_shapes_keep_subject_and_label(shape: tuple[int, int, int]) -> None:
    ref = generate_dementia_case(77, shape=SMALL)
    case = generate_dementia_case(77, shape=shape)
    assert case.image.shape == shape and case.image.dtype == np.float32
    assert case.tabular == ref.tabular and case.label == ref.label
    for key in ("neurodegeneration", "at_stage", "ventricle_enlargement_mm", "amyloid", "tau"):
        assert case.params[key] == ref.params[key]
    np.testing.assert_allclose(case.spacing, np.array((159, 189, 153)) / np.array(shape))


def test_background_is_exactly_zero_and_brain_has_tissue_contrast() -> None:
    img = generate_dementia_case(9, shape=SMALL).image
    assert img[0, 0, 0] == 0.0 and img[-1, -1, -1] == 0.0
    brain = img[img > 0]
    lo, hi = np.percentile(brain, [5, 95])
    assert hi > 2.0 * lo  # CSF is much darker than white matter


def test_dataset_seeds_are_distinct_and_reproducible() -> None:
    cases = generate_dementia_dataset(4, seed=3, shape=(16, 16, 16))
    assert len(cases) == 4 and len({c.seed for c in cases}) == 4
    again = generate_dementia_case(cases[2].seed, shape=(16, 16, 16))  # type: ignore[arg-type]
    np.testing.assert_array_equal(again.image, cases[2].image)
    assert [c.seed for c in generate_dementia_dataset(4, seed=3, shape=(16, 16, 16))] == [c.seed for c in cases]
    assert generate_dementia_dataset(0) == []


# -- tabular ------------------------------------------------------------------------------------


def test_tabular_layout_is_the_adni_one() -> None:
    assert TABULAR_FEATURES == tuple(f["name"] for f in ADNI_FEATURES)
    assert set(MISSING_RATES) == {f["name"] for f in ADNI_FEATURES if "missing" in f}


def test_tabular_values_in_documented_ranges(cohort: list[DementiaCase]) -> None:
    for case in cohort:
        assert tuple(case.tabular) == TABULAR_FEATURES
        for name, value in case.tabular.items():
            if value is None:
                assert name in BIOMARKERS
                continue
            assert isinstance(value, float)
            lo, hi = TABULAR_RANGES[name]
            assert lo <= value <= hi, (name, value)
        assert case.tabular["gender"] in (0.0, 1.0)
        assert case.tabular["APOE4"] in (0.0, 1.0, 2.0)
        assert float(case.tabular["education"]).is_integer()  # type: ignore[arg-type]


def test_missingness_rates(cohort: list[DementiaCase]) -> None:
    for name in BIOMARKERS:
        rate = np.mean([c.tabular[name] is None for c in cohort])
        assert 0.05 <= rate <= 0.35, (name, rate)
    for name in ("age", "gender", "education", "APOE4"):
        assert all(c.tabular[name] is not None for c in cohort)


def test_biomarkers_follow_the_latent_pathology(cohort: list[DementiaCase]) -> None:
    pos = [c for c in cohort if c.params["amyloid_positive"]]
    neg = [c for c in cohort if not c.params["amyloid_positive"]]
    assert pos and neg

    def mean(cases: list[DementiaCase], name: str) -> float:
        return float(np.mean([c.tabular[name] for c in cases if c.tabular[name] is not None]))

    assert mean(pos, "ABETA") < mean(neg, "ABETA") - 300  # low CSF amyloid-beta when positive
    assert mean(pos, "AV45") > mean(neg, "AV45") + 0.2  # high amyloid PET when positive
    tpos = [c for c in cohort if c.params["tau_positive"]]
    assert all(c.params["amyloid_positive"] for c in tpos)
    assert mean(tpos, "PTAU") > mean(neg, "PTAU") + 10


# -- labels and atrophy -------------------------------------------------------------------------


def test_class_balance(cohort: list[DementiaCase]) -> None:
    share = np.array([np.mean([c.label == k for c in cohort]) for k in CLASSES])
    assert np.all(share >= 0.2) and np.all(share <= 0.5), dict(zip(CLASSES, share, strict=True))
    flipped = np.mean([c.params["label_flipped"] for c in cohort])
    assert flipped <= 0.12
    clean_ok = [c.label == c.params["clean_label"] for c in cohort if not c.params["label_flipped"]]
    assert all(clean_ok)


def test_label_is_the_documented_function_of_the_stages(cohort: list[DementiaCase]) -> None:
    for c in cohort:
        severity = c.params["at_stage"] + c.params["neurodegeneration_stage"]
        expected = "CN" if severity <= 1 else ("MCI" if severity == 2 else "Dementia")
        assert c.params["clean_label"] == expected


def test_measured_csf_tracks_the_atrophy_and_the_label(cohort: list[DementiaCase]) -> None:
    dark = np.array([_dark_fractions(c.image)[0] for c in cohort])
    enlargement = np.array([c.params["ventricle_enlargement_mm"] for c in cohort])
    assert np.corrcoef(dark, enlargement)[0, 1] > 0.9
    labels = np.array([c.label for c in cohort])
    cn, dem = dark[labels == "CN"].mean(), dark[labels == "Dementia"].mean()
    assert dem > cn * 1.3, (cn, dem)


def test_amyloid_is_not_visible_in_the_image(cohort: list[DementiaCase]) -> None:
    """At a given neurodegeneration stage, amyloid-positive and -negative brains look alike."""
    dark = np.array([_dark_fractions(c.image)[0] for c in cohort])
    stage = np.array([c.params["neurodegeneration_stage"] for c in cohort])
    amyloid = np.array([c.params["amyloid_positive"] for c in cohort])
    spread = dark.std()
    for s in range(3):
        a, b = dark[(stage == s) & amyloid], dark[(stage == s) & ~amyloid]
        if len(a) >= 5 and len(b) >= 5:
            assert abs(a.mean() - b.mean()) < 0.5 * spread


def test_fusion_beats_image_only_and_tabular_only(cohort: list[DementiaCase]) -> None:
    y = np.array([CLASSES.index(c.label) for c in cohort])
    image = np.array([_dark_fractions(c.image) for c in cohort])
    tab = np.array([_tabular_scores(c.tabular) for c in cohort])
    image_only = _cv_balanced_accuracy(np.c_[image, tab[:, :1]], y)  # atrophy (+ age to correct it)
    tabular_only = _cv_balanced_accuracy(tab, y)
    both = _cv_balanced_accuracy(np.c_[image, tab], y)
    assert both >= 0.72, (image_only, tabular_only, both)
    assert both >= image_only + 0.15, (image_only, tabular_only, both)
    assert both >= tabular_only + 0.15, (image_only, tabular_only, both)


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [-1, 1.5, "3", None, True])
def test_bad_seed_raises(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        generate_dementia_case(seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(64, 64), (64, 64, 64, 1), (8, 64, 64), (64, 64, 1000), (32.0, 32, 32), 64,
                                   (True, 32, 32)])
def test_bad_shape_raises(shape: object) -> None:
    with pytest.raises(ValueError, match="shape"):
        generate_dementia_case(0, shape=shape)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [-1, 2.0, "4", None])
def test_bad_dataset_size_raises(n: object) -> None:
    with pytest.raises(ValueError, match="n must"):
        generate_dementia_dataset(n)  # type: ignore[arg-type]


def test_bad_dataset_seed_and_shape_raise() -> None:
    with pytest.raises(ValueError, match="seed"):
        generate_dementia_dataset(2, seed=-5)
    with pytest.raises(ValueError, match="shape"):
        generate_dementia_dataset(2, shape=(4, 4, 4))
