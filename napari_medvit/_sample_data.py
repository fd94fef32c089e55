"""napari sample-data contributions: a synthetic endoscopy frame, a real brain MRI, a real CT slice, and
two synthetic 3D subjects made on the fly by the package's generators (seeded, so always the same):
a FLAIR + T1 pair with white-matter-hyperintensity-like lesions (for the WMH models' demo weights)
and a DAFT subject (T1-like volume + tabular row, for DAFT's demo weights).

The files live in ``sample_data/`` next to this module (a symlink to the repository's
``sample_data/`` folder in a source checkout, package data in a wheel); see its README.md for
their origin and licences. They are read through the plugin's own reader
(:func:`napari_medvit._reader.get_reader`), so the layers carry the same geometry and
``medvit_meta`` metadata as when the user opens the files.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from napari_medvit._layers import TABULAR_KEY
from napari_medvit._reader import get_reader, layer_data_tuple
from napari_medvit.io import META_KEY, read_image

LayerDataTuple = tuple[Any, dict[str, Any], str]

SAMPLE_DIR = Path(__file__).parent / "sample_data"

ENDOSCOPY_FILE = "endoscopy_polyp.png"
ENDOSCOPY_MASK_FILE = "endoscopy_polyp_mask.png"
BRAIN_MRI_FILE = "mni152_t1_1mm.nii.gz"
CT_FILE = "CT_small.dcm"

GROUND_TRUTH_KEY = "medvit_ground_truth"
BRAIN_SAMPLE_SEED = 15  # generate_brain_case: 10 lesions, 11.9 mL, 2 mm; not among the demo weights' subjects
DEMENTIA_SAMPLE_SEED = 16  # generate_dementia_case: an MCI subject; not among the demo weights' subjects
_TRANSFORM_KEYS = ("scale", "translate", "rotate", "shear", "affine")


def sample_path(name: str) -> Path:
    """Path of a shipped sample file; FileNotFoundError naming it when it is missing."""
    path = SAMPLE_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"napari-medvit sample file {name!r} is missing (looked for {path}); "
            "reinstall the package or run scripts/make_sample_data.py in a source checkout"
        )
    return path


def _read_single_image(name: str, layer_name: str) -> LayerDataTuple:
    path = sample_path(name)
    reader = get_reader(str(path))
    if reader is None:
        raise RuntimeError(f"{path}: no napari-medvit reader accepts this sample file")
    layers = reader(str(path))
    if len(layers) != 1:
        raise RuntimeError(f"{path}: expected one layer from the reader, got {len(layers)}")
    data, kwargs, layer_type = layers[0]
    kwargs = {**kwargs, "name": layer_name}
    return data, kwargs, layer_type


def endoscopy_frame() -> list[LayerDataTuple]:
    """The synthetic colonoscopy frame (RGB) and its polyp ground truth (Labels, hidden)."""
    image = _read_single_image(ENDOSCOPY_FILE, "endoscopy polyp (synthetic)")
    data, kwargs, _ = image
    mask_path = sample_path(ENDOSCOPY_MASK_FILE)
    mask, _mask_meta = read_image(mask_path)
    spatial = tuple(data.shape[:-1]) if kwargs.get("rgb") else tuple(data.shape)
    if mask.ndim != 2 or tuple(mask.shape) != spatial:
        raise ValueError(
            f"{mask_path}: ground-truth mask of shape {mask.shape} does not match the frame's "
            f"spatial shape {spatial}"
        )
    metadata: dict[str, Any] = {
        GROUND_TRUTH_KEY: {"source": str(mask_path), "classes": {"0": "background", "1": "polyp"}},
    }
    if META_KEY in kwargs.get("metadata", {}):
        metadata[META_KEY] = copy.deepcopy(kwargs["metadata"][META_KEY])
    labels_kwargs: dict[str, Any] = {
        "name": "polyp ground truth",
        "opacity": 0.4,
        "visible": False,
        "metadata": metadata,
        **{key: copy.deepcopy(kwargs[key]) for key in _TRANSFORM_KEYS if key in kwargs},
    }
    labels = (mask.astype("uint8", copy=False), labels_kwargs, "labels")
    return [image, labels]


def brain_mri() -> list[LayerDataTuple]:
    """The MNI152 (ICBM 2009a nonlinear symmetric) T1 template, 1 mm, as shipped by nilearn."""
    return [_read_single_image(BRAIN_MRI_FILE, "MNI152 T1")]


def ct_slice() -> list[LayerDataTuple]:
    """pydicom's ``CT_small.dcm``: one 128x128 CT slice with its pixel spacing."""
    return [_read_single_image(CT_FILE, "CT_small")]


def _synthetic_image(array: Any, meta: Any, name: str, **extra: Any) -> LayerDataTuple:
    data, kwargs, layer_type = layer_data_tuple(name, array, meta)
    return data, {**kwargs, "name": name, **extra}, layer_type


def synthetic_brain_flair_t1() -> list[LayerDataTuple]:
    """A synthetic subject of ``medvit synth brain`` (MNI152-based, 2 mm): FLAIR, T1 (hidden) and the
    lesion ground truth (Labels, hidden), on the subject's MNI152 geometry."""
    from napari_medvit.synthetic import generate_brain_case
    from napari_medvit.training.synth import brain_case_meta

    case = generate_brain_case(BRAIN_SAMPLE_SEED, spacing=2.0)
    meta = brain_case_meta(case)
    flair = _synthetic_image(case.flair, meta, "FLAIR (synthetic)")
    t1 = _synthetic_image(case.t1, meta, "T1 (synthetic)", visible=False)
    transform = {key: copy.deepcopy(flair[1][key]) for key in _TRANSFORM_KEYS if key in flair[1]}
    truth = (case.mask.astype("uint8", copy=False), {
        "name": "lesion ground truth", "opacity": 0.5, "visible": False, **transform,
        "metadata": {GROUND_TRUTH_KEY: {"source": f"generate_brain_case({BRAIN_SAMPLE_SEED})",
                                        "classes": {"0": "background", "1": "lesion"},
                                        "lesion_volume_ml": case.params.get("lesion_volume_ml")},
                     META_KEY: meta.to_dict()},
    }, "labels")
    return [t1, flair, truth]


def synthetic_dementia_subject() -> list[LayerDataTuple]:
    """A synthetic DAFT subject of ``medvit synth dementia``: the T1-like volume, its tabular row in the
    layer's metadata (the inference dock fills DAFT's fields from it) and its diagnosis."""
    from napari_medvit.synthetic import generate_dementia_case
    from napari_medvit.training.synth import dementia_case_meta

    case = generate_dementia_case(DEMENTIA_SAMPLE_SEED)
    data, kwargs, layer_type = _synthetic_image(case.image, dementia_case_meta(case),
                                                f"DAFT subject (synthetic, diagnosis {case.label})")
    kwargs["metadata"] = {**kwargs["metadata"], TABULAR_KEY: dict(case.tabular),
                          GROUND_TRUTH_KEY: {"source": f"generate_dementia_case({DEMENTIA_SAMPLE_SEED})",
                                             "diagnosis": case.label}}
    return [(data, kwargs, layer_type)]


__all__ = ["SAMPLE_DIR", "brain_mri", "ct_slice", "endoscopy_frame", "sample_path", "synthetic_brain_flair_t1",
           "synthetic_dementia_subject"]
