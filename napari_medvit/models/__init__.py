"""Model zoo: ``list_models()`` and ``create_model(name, *, checkpoint=None, **overrides)``.

The registry is a lazy table: importing this package imports no torch; a model's module is
imported by ``create_model`` only.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from napari_medvit.models._registry import ModelSpec, get_spec, list_models

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelSpec", "create_model", "get_spec", "list_models"]


def create_model(name: str, *, checkpoint: str | os.PathLike[str] | None = None, **config_overrides: Any) -> nn.Module:
    """Build a registered model; with no overrides, its reference configuration.

    ``checkpoint``: a .safetensors/.pt/.pth file, ours (with a manifest) or laid out like the
    official repository's. A manifest's configuration is used for building (overrides win), its
    architecture must match ``name``, and a state_dict that does not fit raises
    :class:`~napari_medvit.models.checkpoint.CheckpointError` listing the offending keys.
    The returned model is in eval mode and carries ``model.medvit_spec`` and
    ``model.checkpoint_info`` (trained or not, source, sha256).
    """
    from napari_medvit.models._compat import keep_triton_out_without_cuda

    keep_triton_out_without_cuda()
    from napari_medvit.models.checkpoint import CheckpointError, CheckpointInfo, load_weights, read_checkpoint

    spec = get_spec(name)
    module = importlib.import_module(spec.module)
    factory = getattr(module, spec.factory)

    state = manifest = None
    digest = ""
    if checkpoint is not None:
        state, manifest, digest = read_checkpoint(checkpoint)
        if manifest is not None:
            other = _family_of(manifest.arch)
            if other != spec.family:
                raise CheckpointError(
                    f"{os.fspath(checkpoint)}: its manifest says architecture {manifest.arch!r} "
                    f"({other or 'unknown family'}), which cannot be loaded into {name!r} ({spec.family})"
                )
            config_overrides = {**manifest.config, **config_overrides}
    try:
        model = factory(**{**spec.factory_args, **config_overrides})
    except TypeError as exc:
        raise ValueError(f"{name}: invalid configuration {config_overrides}: {exc}") from exc
    if state is not None:
        load_weights(model, state, filter_fn=getattr(module, "checkpoint_filter_fn", None),
                     source=os.path.basename(os.fspath(checkpoint)))
        trained = manifest.trained if manifest is not None else True
        info = CheckpointInfo(trained=trained, source=os.fspath(checkpoint), file_sha256=digest,
                              manifest=manifest.to_dict() if manifest else None)
    else:
        info = CheckpointInfo(trained=False, source="random initialisation")
    model.medvit_spec = spec
    model.checkpoint_info = info
    return model.eval()


def _family_of(arch: str) -> str | None:
    try:
        return get_spec(arch).family
    except ValueError:
        return None
