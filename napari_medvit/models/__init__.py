"""Model zoo: ``list_models()`` and ``create_model(name, *, checkpoint=None, **overrides)``.

The registry is a lazy table: importing this package imports no torch; a model's module is
imported by ``create_model`` only.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from napari_medvit.models._registry import ModelSpec, get_spec, list_models, register_model, unregister_model

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelSpec", "create_model", "get_spec", "head_prefixes", "list_models", "register_model",
           "unregister_model"]


def create_model(name: str, *, checkpoint: str | os.PathLike[str] | None = None, new_head: bool = False,
                 **config_overrides: Any) -> nn.Module:
    """Build a registered model; with no overrides, its reference configuration.

    ``checkpoint``: a .safetensors/.pt/.pth file, ours (with a manifest) or laid out like the
    official repository's. A manifest's configuration is used for building (overrides win), its
    architecture must match ``name``, and a state_dict that does not fit raises
    :class:`~napari_medvit.models.checkpoint.CheckpointError` listing the offending keys.
    The returned model is in eval mode and carries ``model.medvit_spec``, ``model.checkpoint_info``
    (trained or not, source, sha256) and ``model.medvit_config``, its resolved configuration
    (:func:`napari_medvit.models.config.resolve`: preprocessing, class names, adapter); a manifest
    whose preprocessing has an unknown key or a bad value is a CheckpointError naming the file and key.

    ``new_head=True`` (with a checkpoint): the class head (:func:`head_prefixes`) keeps its fresh
    initialisation, shaped by the overrides (e.g. ``num_classes``), and everything else is loaded
    strictly; this is how a classifier or detector is fine-tuned on classes other than its
    checkpoint's. ``checkpoint_info.new_head`` then lists the head's prefixes and the manifest's
    class names are dropped (they described the old head).
    """
    from napari_medvit.models._compat import keep_triton_out_without_cuda

    keep_triton_out_without_cuda()
    from napari_medvit.models.adapters import load_adapter
    from napari_medvit.models.checkpoint import CheckpointError, CheckpointInfo, load_weights, read_checkpoint
    from napari_medvit.models.config import ConfigError, resolve

    spec = get_spec(name)
    adapter = load_adapter(spec.adapter)
    module = importlib.import_module(spec.module)
    factory = getattr(module, spec.factory)

    state = manifest = None
    digest = source = ""  # source: the checkpoint's path, named in errors
    if checkpoint is not None:
        source = os.fspath(checkpoint)
        state, manifest, digest = read_checkpoint(checkpoint)
        if manifest is not None:
            other = _family_of(manifest.arch)
            if other != spec.family:
                raise CheckpointError(
                    f"{source}: its manifest says architecture {manifest.arch!r} "
                    f"({other or 'unknown family'}), which cannot be loaded into {name!r} ({spec.family})"
                )
            config_overrides = {**manifest.config, **config_overrides}
            try:  # before building: a bad manifest is reported as such, not as a model error
                resolve(spec, manifest, source=source)
            except ConfigError as exc:
                raise CheckpointError(str(exc)) from exc
    try:
        model = factory(**{**spec.factory_args, **config_overrides})
    except (AssertionError, RuntimeError, TypeError, ValueError) as exc:
        if manifest is not None and manifest.config and not isinstance(exc, CheckpointError):
            # the configuration came (at least partly) from the checkpoint: name the file
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"{source}: the configuration in its manifest does not build {name!r} "
                f"({type(exc).__name__}: {reason}); configuration {config_overrides}"
            ) from exc
        if not isinstance(exc, TypeError):
            raise
        raise ValueError(f"{name}: invalid configuration {config_overrides}: {exc}") from exc
    if new_head and state is None:
        raise ValueError(f"{name}: new_head replaces a checkpoint's class head; no checkpoint was given")
    if state is not None:
        head = adapter.head_prefixes(model) if new_head else ()
        if new_head and not head:
            raise ValueError(f"{name} has no class head to replace (it is not a classifier or detector)")
        load_weights(model, state, filter_fn=getattr(module, "checkpoint_filter_fn", None),
                     source=os.path.basename(source), keep_initialised=head)
        recorded = manifest.to_dict() if manifest else None
        info = CheckpointInfo(trained=manifest.trained if manifest is not None else True, source=source,
                              file_sha256=digest, manifest={**recorded, "class_names": []} if recorded and head
                              else recorded, new_head=head)
    else:
        info = CheckpointInfo(trained=False, source="random initialisation")
    model.medvit_spec = spec
    model.checkpoint_info = info
    model.medvit_config = resolve(spec, manifest, n_outputs=adapter.num_outputs(model), new_head=info.new_head,
                                  source=source)
    return model.eval()


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of a model's class head, as its family's adapter knows them (timm's
    ``pretrained_cfg["classifier"]``, DAFT's ``fc``, SMCA-DETR's ``class_embed``); empty for models
    without one (segmentation)."""
    from napari_medvit.models.adapters import ModelAdapter, load_adapter

    spec = getattr(model, "medvit_spec", None)
    adapter = load_adapter(spec.adapter) if spec is not None else ModelAdapter()
    return adapter.head_prefixes(model)


def _family_of(arch: str) -> str | None:
    try:
        return get_spec(arch).family
    except ValueError:
        return None
