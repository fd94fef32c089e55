"""The model table: what each model is, and where its factory lives (imported only on use)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """Registry entry: enough to build the model and to drive the widget without importing torch.

    ``preprocessing``: the keys of :class:`~napari_medvit.transforms.preprocessing.Preprocessing`
    (checked when the model's configuration is resolved, :func:`napari_medvit.models.config.resolve`).
    ``adapter``: what the family adds to the generic task code (:mod:`napari_medvit.models.adapters`).

    training keys (fine-tuning settings a paper prescribes beyond its task's defaults): ``patches_per_case``
    — 3D segmentation patches cropped from each case of a batch (default 1); ``class_weights``
    "inverse_sqrt_frequency" — the 3D segmentation loss weights each class by 1 / sqrt of its voxel
    frequency in the training labels.
    """

    name: str
    module: str
    factory: str
    family: str
    task: str  # "segment" | "classify" | "detect"
    dims: int  # 2 or 3
    in_chans: int
    class_names: tuple[str, ...]
    preprocessing: dict[str, Any]
    adapter: str  # "module:Class" of its ModelAdapter (napari_medvit.models.adapters)
    display_name: str
    description: str
    short_name: str = ""  # family name used in layer names, e.g. "TransFuse"
    factory_args: dict[str, Any] = field(default_factory=dict)  # passed to the factory before overrides
    paper: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    training: dict[str, Any] = field(default_factory=dict)


_TRANSFUSE_PRE = {
    "resize": (192, 256),
    "size_multiple": 32,
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "color": "rgb",
    "threshold": 0.5,
}
_TRANSFUSE_PAPER = "Zhang et al., TransFuse: Fusing Transformers and CNNs for Medical Image Segmentation, MICCAI 2021"


def _transfuse(name: str, factory: str, display: str, description: str, pre: dict[str, Any] | None = None,
               tags: tuple[str, ...] = ()) -> ModelSpec:
    return ModelSpec(
        name=name, module="napari_medvit.models.transfuse", factory=factory, family="transfuse",
        task="segment", dims=2, in_chans=3, class_names=("background", "lesion"),
        preprocessing=pre or dict(_TRANSFUSE_PRE), adapter="napari_medvit.models.adapters:TransFuseAdapter",
        display_name=display, description=description, paper=_TRANSFUSE_PAPER, tags=tags,
        short_name="TransFuse",
    )


_MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        _transfuse("transfuse_s", "transfuse_s", "TransFuse-S",
                   "ResNet-34 + DeiT-S (8 blocks) with BiFusion; binary lesion segmentation, 26.2 M parameters"),
        _transfuse("transfuse_l", "transfuse_l", "TransFuse-L",
                   "ResNet-50 + DeiT-B (12 blocks) with BiFusion; 143.5 M parameters"),
        _transfuse("transfuse_l_384", "transfuse_l_384", "TransFuse-L*",
                   "TransFuse-L at 384x512 (position grid 24x32); 144.0 M parameters",
                   pre={**_TRANSFUSE_PRE, "resize": (384, 512)}),
        _transfuse("transfuse_demo", "transfuse_demo", "TransFuse (demo config)",
                   "DEMO configuration, smaller than the paper's: ResNet-18 + 4 DeiT blocks of width 192 with "
                   "BiFusion, 7.8 M parameters; its bundled weights are trained on synthetic frames only",
                   tags=("demo",)),
        _transfuse("transfuse_tiny", "transfuse_tiny", "TransFuse (tiny test config)",
                   "ResNet-18 + 2 DeiT blocks of width 64: a tiny configuration for tests, not from the paper",
                   pre={**_TRANSFUSE_PRE, "resize": (64, 64)}, tags=("test",)),
    )
}


_CROSSVIT_PAPER = ("Chen, Fan, Panda, CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image "
                   "Classification, ICCV 2021")
_CROSSVIT_SIZES = {"tiny": "Ti", "small": "S", "base": "B", "9": "9", "15": "15", "18": "18"}


def _crossvit(variant: str, *, name: str | None = None, display: str | None = None, tags: tuple[str, ...] = (),
              **factory_args: Any) -> ModelSpec:
    parts = variant.split("_")  # crossvit_15_dagger_408
    size = int(parts[-1])
    dagger = "dagger" in parts
    if display is None:
        display = f"CrossViT-{_CROSSVIT_SIZES[parts[1]]}{'†' if dagger else ''}" + (f" {size}" if size != 240 else "")
    return ModelSpec(
        name=name or variant, module="napari_medvit.models.crossvit", factory="create_crossvit", family="crossvit",
        task="classify", dims=2, in_chans=3, class_names=(),
        preprocessing={"resize": (size, size), "size_multiple": 1, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                       "color": "rgb"},
        adapter="napari_medvit.models.adapters:CrossViTAdapter", display_name=display,
        description=f"timm {variant}: dual-branch ViT (patch 12 at {size}, patch 16 at {size * 14 // 15}) with "
                    f"CLS cross-attention fusion{'; 3-conv patch embedding' if dagger else ''}",
        paper=_CROSSVIT_PAPER, tags=tags, short_name="CrossViT",
        factory_args={"variant": variant, **factory_args},
    )


_CROSSVIT_VARIANTS = (
    "crossvit_tiny_240", "crossvit_small_240", "crossvit_base_240", "crossvit_9_240", "crossvit_15_240",
    "crossvit_18_240", "crossvit_9_dagger_240", "crossvit_15_dagger_240", "crossvit_18_dagger_240",
    "crossvit_15_dagger_408", "crossvit_18_dagger_408",
)
_MODELS.update({v: _crossvit(v) for v in _CROSSVIT_VARIANTS})
_MODELS["crossvit_demo"] = _crossvit(
    "crossvit_9_240", name="crossvit_demo", display="CrossViT (demo config)", tags=("demo",),
    embed_dim=[96, 192], depth=[[1, 2, 0], [1, 2, 0], [1, 2, 0]], num_heads=[3, 3], mlp_ratio=[3, 3, 1],
)
_MODELS["crossvit_tiny_test"] = _crossvit(
    "crossvit_9_240", name="crossvit_tiny_test", display="CrossViT (tiny test config)", tags=("test",),
    embed_dim=[32, 64], depth=[[1, 1, 0], [1, 1, 0], [1, 1, 0]], num_heads=[2, 2], mlp_ratio=[2, 2, 1],
)


def _timm_classifier(name: str, variant: str, display: str, description: str, size: int = 224,
                     tags: tuple[str, ...] = (), **factory_args: Any) -> ModelSpec:
    return ModelSpec(
        name=name, module="napari_medvit.models.baselines", factory="create_timm_classifier", family="timm",
        task="classify", dims=2, in_chans=3, class_names=(),
        preprocessing={"resize": (size, size), "size_multiple": 1, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                       "color": "rgb"},
        adapter="napari_medvit.models.adapters:ClassifierAdapter", display_name=display, description=description,
        paper="baseline for the ViT-vs-CNN comparison of the seminar", tags=tags,
        short_name=display.split(" ")[0], factory_args={"variant": variant, **factory_args},
    )


_MODELS.update({s.name: s for s in (
    _timm_classifier("deit_small", "deit_small_patch16_224", "DeiT-S",
                     "timm deit_small_patch16_224: ViT-S/16 trained the DeiT way, 22.1 M parameters"),
    _timm_classifier("resnet34", "resnet34", "ResNet-34", "timm resnet34 classifier, 21.8 M parameters"),
    _timm_classifier("resnet50", "resnet50", "ResNet-50", "timm resnet50 classifier, 25.6 M parameters"),
)})


BTCV_CLASSES = (
    "background", "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach",
    "aorta", "inferior vena cava", "portal and splenic veins", "pancreas", "right adrenal gland",
    "left adrenal gland",
)


_BTCV_TRAINING = {"patches_per_case": 4}  # the official Swin-UNETR / UNETR BTCV scripts: num_samples=4 per volume


def _monai3d(name: str, factory: str, display: str, description: str, paper: str, tags: tuple[str, ...] = (),
             roi: tuple[int, int, int] = (96, 96, 96), class_names: tuple[str, ...] = BTCV_CLASSES,
             in_chans: int = 1, short_name: str = "", training: dict[str, Any] | None = None,
             **factory_args: Any) -> ModelSpec:
    adapter = "SwinUNETRAdapter" if factory == "swin_unetr" else "SegmentationAdapter"
    return ModelSpec(
        name=name, module="napari_medvit.models.monai_nets", factory=factory, family="monai3d",
        task="segment", dims=3, in_chans=in_chans, class_names=class_names,
        preprocessing={"resize": None, "size_multiple": 32, "roi_size": roi, "overlap": 0.5, "sw_batch_size": 1,
                       "blend": "gaussian", "intensity": "percentile", "mean": (0.0,), "std": (1.0,)},
        adapter="napari_medvit.models.adapters:" + adapter, display_name=display, description=description, paper=paper,
        tags=tags, short_name=short_name or display.split(" ")[0], factory_args=factory_args,
        training=dict(training or {}),
    )


_MODELS.update({s.name: s for s in (
    _monai3d("swin_unetr", "swin_unetr", "Swin-UNETR",
             "MONAI SwinUNETR, feature size 48, BTCV layout (1 -> 14 classes), sliding window 96^3",
             "Hatamizadeh et al., Swin UNETR, BrainLes 2021", training=_BTCV_TRAINING),
    _monai3d("unetr", "unetr", "UNETR", "MONAI UNETR at 96^3, BTCV layout (1 -> 14 classes), sliding window 96^3",
             "Hatamizadeh et al., UNETR: Transformers for 3D Medical Image Segmentation, WACV 2022",
             training=_BTCV_TRAINING),
    _monai3d("swin_unetr_tiny_test", "swin_unetr", "Swin-UNETR (tiny test config)",
             "SwinUNETR with feature size 12 and 3 classes on 64^3 windows: for tests, not from the paper",
             "", tags=("test",), roi=(64, 64, 64), class_names=("background", "class 1", "class 2"), feature_size=12,
             out_channels=3, depths=(1, 1, 1, 1)),
    _monai3d("unetr_tiny_test", "unetr", "UNETR (tiny test config)",
             "UNETR with hidden size 48 on 32^3 windows and 3 classes: for tests, not from the paper",
             "", tags=("test",), roi=(32, 32, 32), class_names=("background", "class 1", "class 2"),
             img_size=(32, 32, 32), out_channels=3, feature_size=8, hidden_size=48, mlp_dim=96, num_heads=4),
)})


_SMCA_PAPER = "Gao et al., Fast Convergence of DETR with Spatially Modulated Co-Attention, ICCV 2021"


def _smca(name: str, factory: str, display: str, description: str, class_names: tuple[str, ...],
          tags: tuple[str, ...] = (), size: tuple[int, int] = (384, 512)) -> ModelSpec:
    return ModelSpec(
        name=name, module="napari_medvit.models.smca_detr", factory=factory, family="smca_detr",
        task="detect", dims=2, in_chans=3, class_names=class_names,
        preprocessing={"resize": size, "size_multiple": 32, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                       "color": "rgb", "score_threshold": 0.3},
        adapter="napari_medvit.models.adapters:SMCADetrAdapter", display_name=display, description=description,
        paper=_SMCA_PAPER, tags=tags, short_name="SMCA-DETR",
    )


_MODELS.update({s.name: s for s in (
    _smca("smca_detr_r50", "smca_detr_r50", "SMCA-DETR R50",
          "single-scale SMCA-DETR, ResNet-50, dynamic scale type3, 300 queries, 91 classes; 41.8 M parameters",
          tuple(f"class {i}" for i in range(91))),
    _smca("smca_detr_demo", "smca_detr_demo", "SMCA-DETR (demo config)",
          "DEMO configuration, smaller than the paper's: ResNet-18 with trainable batch norm, width 128, 3+3 "
          "layers, 20 queries, 1 class (polyp), 192x256; its bundled weights are trained on synthetic frames only",
          ("polyp",), tags=("demo",), size=(192, 256)),
    _smca("smca_detr_tiny", "smca_detr_tiny", "SMCA-DETR (tiny test config)",
          "ResNet-18, width 32, 2+2 layers, 10 queries, 2 classes: for tests, not from the paper",
          ("polyp", "other"), tags=("test",), size=(128, 160)),
)})


# The 14 tabular inputs of DAFT's ADNI experiments: 9 values and 5 missing-value indicators.
ADNI_FEATURES: tuple[dict[str, Any], ...] = (
    {"name": "age", "unit": "years", "default": 73.0},
    {"name": "gender", "unit": "0 = female, 1 = male", "default": 0.0},
    {"name": "education", "unit": "years", "default": 16.0},
    {"name": "APOE4", "unit": "alleles (0-2)", "default": 0.0},
    {"name": "ABETA", "unit": "pg/mL", "default": 1000.0, "missing": "ABETA_MISSING"},
    {"name": "TAU", "unit": "pg/mL", "default": 250.0, "missing": "TAU_MISSING"},
    {"name": "PTAU", "unit": "pg/mL", "default": 23.0, "missing": "PTAU_MISSING"},
    {"name": "FDG", "unit": "SUVR", "default": 1.2, "missing": "FDG_MISSING"},
    {"name": "AV45", "unit": "SUVR", "default": 1.1, "missing": "AV45_MISSING"},
)

_MODELS["daft"] = ModelSpec(
    name="daft", module="napari_medvit.models.daft", factory="daft", family="daft", task="classify", dims=3,
    in_chans=1, class_names=("CN", "MCI", "Dementia"),
    preprocessing={"resize3d": (64, 64, 64), "intensity": "percentile", "tabular": ADNI_FEATURES},
    adapter="napari_medvit.models.adapters:DAFTAdapter", display_name="DAFT",
    description="3D ResNet (4 base filters) with the Dynamic Affine Feature Map Transform on 14 tabular "
                "features (ADNI layout), 3 classes; 56,911 parameters",
    paper="Pölsterl, Wolf, Wachinger, Combining 3D Image and Tabular Data via the Dynamic Affine Feature Map "
          "Transform, MICCAI 2021",
    short_name="DAFT",
)
_MODELS["resnet3d"] = ModelSpec(
    name="resnet3d", module="napari_medvit.models.daft", factory="resnet3d", family="daft", task="classify", dims=3,
    in_chans=1, class_names=("CN", "MCI", "Dementia"),
    preprocessing={"resize3d": (64, 64, 64), "intensity": "percentile"},
    adapter="napari_medvit.models.adapters:DAFTAdapter", display_name="3D ResNet (DAFT's image-only baseline)",
    description="DAFT's 3D ResNet (4 base filters) with an ordinary residual block in place of the DAFT block: "
                "the image-only baseline of the DAFT paper, no tabular input, 3 classes; 56,535 parameters",
    paper=_MODELS["daft"].paper,
    short_name="ResNet3D",
)


WMH_CLASSES = ("background", "white-matter hyperintensity")
# VoSHT's "weighted loss function" (seminar notes): the paper publishes no weights; ours are 1 / sqrt(frequency)
_VOSHT_TRAINING = {**_BTCV_TRAINING, "class_weights": "inverse_sqrt_frequency"}

_MODELS.update({s.name: s for s in (
    _monai3d("vosht", "swin_unetr", "VoSHT (approximation)",
             "APPROXIMATION of VoSHT (Farkhani et al., CMPB 2024), whose code and architecture are not public: a "
             "Swin-transformer encoder-decoder (MONAI SwinUNETR, feature size 24) over FLAIR + T1, 2 classes; "
             "fine-tuned with a class-weighted Dice + cross-entropy loss (1 / sqrt of each class's voxel frequency)",
             "Farkhani et al., End-to-end Volumetric Segmentation of White Matter Hyperintensities, CMPB 245:108008, "
             "2024 (approximated)", class_names=WMH_CLASSES, in_chans=2, short_name="VoSHT-approx.", in_channels=2,
             out_channels=2, feature_size=24, training=_VOSHT_TRAINING),
    _monai3d("unet", "unet", "U-Net 3D", "MONAI residual U-Net 3D (16-256 channels), WMH layout FLAIR + T1 -> 2 "
             "classes: the CNN baseline", "Ronneberger et al., U-Net, MICCAI 2015 (MONAI implementation)",
             class_names=WMH_CLASSES, in_chans=2, spatial_dims=3, in_channels=2, out_channels=2),
)})
_MODELS["truenet"] = ModelSpec(
    name="truenet", module="napari_medvit.models.truenet", factory="truenet", family="truenet", task="segment", dims=3,
    in_chans=2, class_names=WMH_CLASSES,
    preprocessing={"resize": None, "size_multiple": 1, "roi_size": None, "intensity": "percentile",
                   "mean": (0.0,), "std": (1.0,), "min_size": 8},  # three 2x poolings in every plane
    adapter="napari_medvit.models.adapters:TrUENetAdapter", display_name="TrUE-Net",
    description="triplanar ensemble of 2D U-Nets (axial 3x3, sagittal/coronal 5x5 first convs), FLAIR + T1 -> WMH; "
                "probabilities of the three planes averaged",
    paper="Sundaresan et al., Triplanar ensemble U-Net model for white matter hyperintensities segmentation, "
          "Medical Image Analysis 2021",
    short_name="TrUE-Net",
)
_DEMO_WMH = ("DEMO configuration, smaller than the paper's, FLAIR + T1 -> WMH on 64^3 windows; its bundled weights "
             "are trained on synthetic MNI152-based volumes only")
# 4^3 attention windows instead of 7^3: at 64^3 input the four Swin stages are 32^3, 16^3, 8^3 and 4^3 tokens,
# which 4 divides (7 pads 32 -> 35 and 8 -> 14); a CPU training step of 2 patches takes 2.8 s instead of 7.0 s
# (benchmarks/bench_train_step.py, 2 cores)
_DEMO_WINDOW = "4^3 attention windows (the paper's 7^3 would pad every stage of a 64^3 input)"
_MODELS.update({s.name: s for s in (
    _monai3d("swin_unetr_demo", "swin_unetr", "Swin-UNETR (demo config)",
             f"{_DEMO_WMH}: MONAI SwinUNETR with feature size 12 and {_DEMO_WINDOW}, 3.9 M parameters",
             _MODELS["swin_unetr"].paper, tags=("demo",), roi=(64, 64, 64), class_names=WMH_CLASSES, in_chans=2,
             short_name="Swin-UNETR", in_channels=2, out_channels=2, feature_size=12, window_size=4,
             training=_BTCV_TRAINING),
    _monai3d("unetr_demo", "unetr", "UNETR (demo config)",
             f"{_DEMO_WMH}: MONAI UNETR with hidden size 96 (4 heads, MLP 384), feature size 8, 2.8 M parameters",
             _MODELS["unetr"].paper, tags=("demo",), roi=(64, 64, 64), class_names=WMH_CLASSES, in_chans=2,
             short_name="UNETR", in_channels=2, out_channels=2, img_size=(64, 64, 64), feature_size=8,
             hidden_size=96, mlp_dim=384, num_heads=4, training=_BTCV_TRAINING),
    _monai3d("vosht_demo", "swin_unetr", "VoSHT approximation (demo config)",
             f"{_DEMO_WMH}: the VoSHT APPROXIMATION (MONAI SwinUNETR over FLAIR + T1) at feature size 12 instead "
             f"of 24 and {_DEMO_WINDOW}, 3.9 M parameters; class-weighted loss", _MODELS["vosht"].paper, tags=("demo",),
             roi=(64, 64, 64), class_names=WMH_CLASSES, in_chans=2, short_name="VoSHT-approx.", in_channels=2,
             out_channels=2, feature_size=12, window_size=4, training=_VOSHT_TRAINING),
    _monai3d("unet_demo", "unet", "U-Net 3D (demo config)",
             f"{_DEMO_WMH}: the CNN baseline, MONAI residual U-Net 3D at half the channels (8-128), 1.2 M parameters",
             "Ronneberger et al., U-Net, MICCAI 2015 (MONAI implementation)", tags=("demo",), roi=(64, 64, 64),
             class_names=WMH_CLASSES, in_chans=2, short_name="U-Net", spatial_dims=3, in_channels=2, out_channels=2,
             channels=(8, 16, 32, 64, 128)),
)})
_MODELS["truenet_demo"] = replace(
    _MODELS["truenet"], name="truenet_demo", display_name="TrUE-Net (demo config)", tags=("demo",),
    description="DEMO configuration, 3/8 of the official width (init_channels 24 instead of 64), 3.6 M parameters: "
                "the triplanar ensemble of 2D U-Nets, FLAIR + T1 -> WMH; its bundled weights are trained on "
                "synthetic MNI152-based volumes only",
    factory_args={"init_channels": 24},
)
_MODELS["unet2d"] = ModelSpec(
    name="unet2d", module="napari_medvit.models.monai_nets", factory="unet", family="monai2d", task="segment", dims=2,
    in_chans=3, class_names=("background", "lesion"),
    preprocessing={**_TRANSFUSE_PRE}, adapter="napari_medvit.models.adapters:SegmentationAdapter",
    display_name="U-Net 2D",
    description="MONAI residual U-Net 2D (16-256 channels), RGB frame -> binary mask: the CNN baseline to TransFuse",
    paper="Ronneberger et al., U-Net, MICCAI 2015 (MONAI implementation)", short_name="U-Net",
    factory_args={"spatial_dims": 2, "in_channels": 3, "out_channels": 1},
)


def get_spec(name: str) -> ModelSpec:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_MODELS))}") from None


def register_model(spec: ModelSpec) -> None:
    """Add a model to the table (a new family: its module, this entry, its adapter; see docs/ARCHITECTURE.md).
    ValueError when the name is taken."""
    if spec.name in _MODELS:
        raise ValueError(f"a model named {spec.name!r} is already registered")
    _MODELS[spec.name] = spec


def unregister_model(name: str) -> None:
    """Remove a model added with :func:`register_model` (tests)."""
    get_spec(name)
    del _MODELS[name]


def list_models(*, task: str | None = None, include_test: bool = True) -> list[str]:
    """Registered model names, optionally only those of one task kind."""
    return sorted(
        n for n, s in _MODELS.items()
        if (task is None or s.task == task) and (include_test or "test" not in s.tags)
    )
