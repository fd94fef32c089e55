"""3D segmentation transformers from MONAI: Swin-UNETR and UNETR (used as MONAI ships them).

* Swin-UNETR (Hatamizadeh et al., BrainLes 2021): a Swin-transformer encoder with a CNN decoder.
  MONAI >= 1.5 has no ``img_size`` argument (any size divisible by 32 works); bundles written for
  older MONAI still pass it, so it is dropped here with the other obsolete keys.
* UNETR (Hatamizadeh et al., WACV 2022): a ViT encoder on 16^3 patches of a fixed ``img_size``.

The reference configuration is MONAI's BTCV bundle: 1 input channel (CT), 14 classes, roi 96^3.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from napari_medvit.models._registry import BTCV_CLASSES
from napari_medvit.models.manifest import strip_module_prefix

__all__ = ["BTCV_CLASSES", "checkpoint_filter_fn", "swin_unetr", "unetr"]

_OBSOLETE_SWIN_ARGS = ("img_size",)


def swin_unetr(in_channels: int = 1, out_channels: int = 14, feature_size: int = 48, **config: Any) -> nn.Module:
    """MONAI SwinUNETR; feature_size 48 gives 62,187,296 parameters for 1 -> 14 channels."""
    from monai.networks.nets import SwinUNETR

    dropped = {k: config.pop(k) for k in _OBSOLETE_SWIN_ARGS if k in config}
    model = SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size, **config)
    model.config = {"in_channels": in_channels, "out_channels": out_channels, "feature_size": feature_size, **config}
    model.dropped_config = dropped
    return model


def unetr(in_channels: int = 1, out_channels: int = 14, img_size: Any = (96, 96, 96), **config: Any) -> nn.Module:
    """MONAI UNETR at a fixed ``img_size`` (the sliding-window roi); 92,802,478 parameters at 96^3."""
    from monai.networks.nets import UNETR

    size = (img_size,) * 3 if isinstance(img_size, int) else tuple(img_size)
    model = UNETR(in_channels=in_channels, out_channels=out_channels, img_size=size, **config)
    model.config = {"in_channels": in_channels, "out_channels": out_channels, "img_size": list(size), **config}
    return model


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """MONAI bundles save plain state_dicts; strip DataParallel/DDP ``module.`` prefixes."""
    return strip_module_prefix(state_dict)


def unet(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
         channels: tuple[int, ...] = (16, 32, 64, 128, 256), strides: tuple[int, ...] = (2, 2, 2, 2),
         num_res_units: int = 2, **config: Any) -> nn.Module:
    """MONAI's residual U-Net (the CNN baseline of the ViT-vs-CNN comparison), 2D or 3D."""
    from monai.networks.nets import UNet

    model = UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                 channels=tuple(channels), strides=tuple(strides), num_res_units=num_res_units, **config)
    model.config = {"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels,
                    "channels": list(channels), "strides": list(strides), "num_res_units": num_res_units, **config}
    return model
