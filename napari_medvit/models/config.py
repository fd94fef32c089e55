"""One resolved configuration per model: registry entry + checkpoint manifest, merged and checked once.

:func:`resolve` is the only place where a registry entry (:class:`~napari_medvit.models.ModelSpec`) and a
checkpoint's manifest are merged (as timm's ``pretrained_cfg`` + ``resolve_data_config``): the
preprocessing (the checkpoint's keys over the registry's, each key checked:
:class:`~napari_medvit.transforms.preprocessing.Preprocessing`), the class names, the fine-tuning
settings and the family's adapter (its output contract). ``create_model`` attaches the result to the
model (``model.medvit_config``, read with :func:`config_of`); the predictor, every training task, the
export and the CLI read it and merge nothing themselves.

Class names, in order of precedence: a new head's (none: the data defines them), the manifest's, the
registry's when they fit the head's number of outputs, ImageNet's for a 1000-class classifier, else
``class 0`` ... ``class K-1``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from napari_medvit.models._registry import ModelSpec, get_spec
from napari_medvit.models.adapters import ModelAdapter, load_adapter
from napari_medvit.transforms.preprocessing import ConfigError, Preprocessing

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ConfigError", "ResolvedConfig", "TrainingSettings", "config_of", "resolve", "resolve_checkpoint"]

CLASS_WEIGHT_RULES = ("inverse_sqrt_frequency",)


@dataclass(frozen=True)
class TrainingSettings:
    """Fine-tuning settings a paper prescribes beyond its task's defaults (``ModelSpec.training``):
    ``patches_per_case`` 3D patches cropped from each case of a batch; ``class_weights`` the rule
    weighting the 3D loss per class (``"inverse_sqrt_frequency"``) or None."""

    patches_per_case: int = 1
    class_weights: str | None = None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, where: str) -> TrainingSettings:
        known = ("patches_per_case", "class_weights")
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.5)
                raise ConfigError(f"{where}: unknown training key {key!r}"
                                  + (f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"))
        n = values.get("patches_per_case", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{where}: training 'patches_per_case' is {n!r}, expected a whole number >= 1")
        rule = values.get("class_weights")
        if rule is not None and rule not in CLASS_WEIGHT_RULES:
            raise ConfigError(f"{where}: training 'class_weights' is {rule!r}, expected one of {CLASS_WEIGHT_RULES}")
        return cls(int(n), rule)


@dataclass(frozen=True)
class ResolvedConfig:
    """Everything the task code needs to know about a model, typed and checked (see the module docstring)."""

    spec: ModelSpec
    adapter: ModelAdapter
    preprocessing: Preprocessing
    class_names: tuple[str, ...]
    training: TrainingSettings
    trained: bool = False
    checkpoint: str = ""
    checkpoint_preprocessing: dict[str, Any] = field(default_factory=dict)  # the manifest's own keys
    new_head: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def dims(self) -> int:
        return self.spec.dims

    @property
    def in_chans(self) -> int:
        return self.spec.in_chans

    @property
    def outputs(self) -> tuple[str, ...]:
        """The output contract: the overlay kinds a run shows (:mod:`napari_medvit.models.adapters`)."""
        return self.adapter.outputs

    @property
    def tabular_features(self) -> tuple[dict[str, Any], ...]:
        return self.preprocessing.tabular


def _manifest_fields(manifest: Any) -> tuple[dict[str, Any], list[str], bool]:
    """(preprocessing, class names, trained) of a Manifest, its dict, or None."""
    if manifest is None:
        return {}, [], False
    if isinstance(manifest, Mapping):
        return (dict(manifest.get("preprocessing") or {}), list(manifest.get("class_names") or []),
                bool(manifest.get("trained", True)))
    return dict(manifest.preprocessing or {}), list(manifest.class_names or []), bool(manifest.trained)


def _class_names(spec: ModelSpec, manifest_names: list[str], n_outputs: int | None,
                 new_head: bool) -> tuple[str, ...]:
    if new_head:
        return ()
    if manifest_names:
        return tuple(manifest_names)
    if n_outputs is None or spec.task == "segment" and n_outputs == 1:  # binary: one logit, two classes
        return spec.class_names
    if spec.class_names and len(spec.class_names) == n_outputs:
        return spec.class_names
    if spec.task == "classify" and n_outputs == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return tuple(info.index_to_description(i) for i in range(n_outputs))
    return tuple(f"class {i}" for i in range(n_outputs))


def resolve(spec: ModelSpec | str, manifest: Any = None, *, n_outputs: int | None = None,
            new_head: tuple[str, ...] = (), source: str = "") -> ResolvedConfig:
    """The resolved configuration of ``spec`` with a checkpoint ``manifest`` (a Manifest, its dict, or None).

    ``n_outputs``: the built head's number of classes (None when not built yet); ``new_head``: the
    prefixes of the checkpoint's class head when it is being replaced (its class names are dropped);
    ``source``: the checkpoint, named in errors. Raises :class:`ConfigError` naming the bad key and
    where it came from."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    registry = Preprocessing.from_dict(spec.preprocessing, where=f"registry entry {spec.name!r}")
    own, manifest_names, trained = _manifest_fields(manifest)
    pre = registry.merged(own, where=f"{source or 'checkpoint'} (its manifest)")
    return ResolvedConfig(
        spec=spec, adapter=load_adapter(spec.adapter), preprocessing=pre,
        class_names=_class_names(spec, manifest_names, n_outputs, bool(new_head)),
        training=TrainingSettings.from_dict(spec.training, where=f"registry entry {spec.name!r}"),
        trained=trained if manifest is not None else bool(source), checkpoint=source,
        checkpoint_preprocessing=own, new_head=tuple(new_head),
    )


def resolve_checkpoint(name: str, checkpoint: str | None) -> ResolvedConfig:
    """The configuration of model ``name`` with a checkpoint file, read from its header only (no weights, no
    torch): a .safetensors manifest is read, other files (.pt, bundles) count as having none."""
    manifest = None
    if checkpoint and str(checkpoint).endswith(".safetensors"):
        from napari_medvit.models.manifest import read_manifest

        manifest = read_manifest(checkpoint)
    return resolve(name, manifest, source=str(checkpoint or ""))


def config_of(model: nn.Module) -> ResolvedConfig:
    """The configuration ``create_model`` attached to ``model``; ValueError for another model."""
    config = getattr(model, "medvit_config", None)
    if not isinstance(config, ResolvedConfig):
        raise ValueError(f"{type(model).__name__} was not made by napari_medvit.models.create_model "
                         "(it has no medvit_config)")
    return config
