"""TransFuse: Fusing Transformers and CNNs for Medical Image Segmentation.

Paper: Zhang, Liu, Hu. "TransFuse: Fusing Transformers and CNNs for Medical Image
Segmentation", MICCAI 2021. Official code: Rayicer/TransFuse (lib/TransFuse.py, lib/DeiT.py).

Two branches run in parallel on the same image:

* a CNN branch: torchvision ResNet-34 (TransFuse-S) or ResNet-50 (TransFuse-L) with ``layer4``
  and ``fc`` replaced by identities, giving features at 1/4, 1/8 and 1/16;
* a transformer branch: a DeiT (timm blocks) whose token map at 1/16 is upsampled twice
  (``up1``, ``up2``) to 1/8 and 1/4.

At each scale a BiFusion block fuses them: channel attention (squeeze-excitation) on the
transformer feature, spatial attention (``cat(max_c, mean_c) -> 7x7 conv -> BN -> sigmoid``) on
the CNN feature, and a bilinear (Hadamard) product of both; an attention-gated decoder joins
the three fused maps. Three heads: ``map_x`` (fused 1/16), ``map_1`` (transformer 1/4) and
``map_2`` (fused 1/4, the prediction used at inference).

Faithful to the official module layout and state_dict keys (an official checkpoint loads with
``strict=True`` through :func:`checkpoint_filter_fn`), with one generalisation: the official
code fixes the token grid to 12x16 (192x256 input); here any input whose sides are divisible by
32 works, the stored position embedding being interpolated (bilinear, align_corners=True, as
the official code itself resized DeiT's 14x14 grid) to the actual token grid.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from napari_medvit.models.manifest import strip_module_prefix

__all__ = [
    "TransFuse",
    "BiFusionBlock",
    "checkpoint_filter_fn",
    "transfuse_s",
    "transfuse_l",
    "transfuse_l_384",
    "transfuse_demo",
    "transfuse_tiny",
]

# Channels of ResNet layer1..layer3 outputs.
_CNN_CHANNELS = {"resnet18": (64, 128, 256), "resnet34": (64, 128, 256), "resnet50": (256, 512, 1024)}


class Conv(nn.Module):
    """Conv2d ('same' padding) with optional BatchNorm and ReLU, named as in the official code."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, bn: bool = False, relu: bool = True,
                 bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, 1, padding=(kernel_size - 1) // 2, bias=bias)
        self.bn = nn.BatchNorm2d(out_ch) if bn else None
        self.relu = nn.ReLU(inplace=True) if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


class Residual(nn.Module):
    """Pre-activation bottleneck residual (BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1) + 1x1 skip."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = out_ch // 2
        self.relu = nn.ReLU(inplace=True)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = Conv(in_ch, mid, 1, relu=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = Conv(mid, mid, 3, relu=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = Conv(mid, out_ch, 1, relu=False)
        # The official block always builds the skip conv (it is part of the checkpoint) and uses
        # it only when the channel counts differ.
        self.skip_layer = Conv(in_ch, out_ch, 1, relu=False)
        self.need_skip = in_ch != out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.skip_layer(x) if self.need_skip else x
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + residual


class BiFusionBlock(nn.Module):
    """BiFusion(g = CNN feature, x = transformer feature) -> (fused feature, spatial attention map).

    The spatial attention map (B, 1, H, W), sigmoid of a 7x7 conv over the channel max and mean
    of ``g``, is what the viewer overlays as "BiFusion spatial attention".
    """

    def __init__(self, ch_1: int, ch_2: int, r_2: int, ch_int: int, ch_out: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        # channel attention on the transformer branch (SE block)
        self.fc1 = nn.Conv2d(ch_2, ch_2 // r_2, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(ch_2 // r_2, ch_2, kernel_size=1)
        self.sigmoid = nn.Sigmoid()
        # spatial attention on the CNN branch
        self.spatial = Conv(2, 1, 7, bn=True, relu=False, bias=False)
        # bilinear modelling of both
        self.W_g = Conv(ch_1, ch_int, 1, bn=True, relu=False)
        self.W_x = Conv(ch_2, ch_int, 1, bn=True, relu=False)
        self.W = Conv(ch_int, ch_int, 3, bn=True, relu=True)
        self.residual = Residual(ch_1 + ch_2 + ch_int, ch_out)
        self.dropout = nn.Dropout2d(drop_rate)
        self.drop_rate = drop_rate

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bp = self.W(self.W_g(g) * self.W_x(x))

        pooled = torch.cat([g.amax(dim=1, keepdim=True), g.mean(dim=1, keepdim=True)], dim=1)
        spatial_map = self.sigmoid(self.spatial(pooled))
        g = spatial_map * g

        w = self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        x = self.sigmoid(w) * x

        fuse = self.residual(torch.cat([g, x, bp], dim=1))
        if self.drop_rate > 0:
            fuse = self.dropout(fuse)
        return fuse, spatial_map


class AttentionGate(nn.Module):
    """Attention gate AG(g, x): psi = sigmoid(BN(1x1(ReLU(BN(W_g g) + BN(W_x x))))); returns x * psi, psi."""

    def __init__(self, F_g: int, F_l: int, F_int: int) -> None:
        super().__init__()
        self.W_g = nn.Sequential(nn.Conv2d(F_g, F_int, 1), nn.BatchNorm2d(F_int))
        self.W_x = nn.Sequential(nn.Conv2d(F_l, F_int, 1), nn.BatchNorm2d(F_int))
        self.psi = nn.Sequential(nn.Conv2d(F_int, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        psi = self.psi(self.relu(self.W_g(g) + self.W_x(x)))
        return x * psi, psi


class DoubleConv(nn.Module):
    """(3x3 conv-BN-ReLU-3x3 conv-BN) + (1x1 conv-BN) identity path, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
            nn.BatchNorm2d(out_ch),
        )
        self.identity = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.double_conv(x) + self.identity(x))


class Up(nn.Module):
    """Bilinear x2 upsampling (align_corners=True), pad to the skip, optional gate, concat, DoubleConv."""

    def __init__(self, in_ch1: int, out_ch: int, in_ch2: int = 0, attn: bool = False) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConv(in_ch1 + in_ch2, out_ch)
        self.attn_block = AttentionGate(in_ch1, in_ch2, out_ch) if attn else None

    def forward(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        x1 = self.up(x1)
        gate = None
        if x2 is not None:
            dy = x2.shape[2] - x1.shape[2]
            dx = x2.shape[3] - x1.shape[3]
            x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
            if self.attn_block is not None:
                x2, gate = self.attn_block(x1, x2)
            x1 = torch.cat([x2, x1], dim=1)
        return self.conv(x1), gate


class DeiTBranch(nn.Module):
    """The transformer branch: DeiT patch embedding + timm ViT blocks + final norm.

    Like the official ``DeiT.forward``, the CLS token is kept as a parameter (it is in the
    checkpoints) but not prepended: the output is the (B, N, C) patch-token sequence.
    ``pos_embed`` has shape (1, h*w, C) for the reference grid ``pos_grid``.
    """

    def __init__(self, embed_dim: int, depth: int, num_heads: int, pos_grid: tuple[int, int], in_chans: int = 3,
                 patch_size: int = 16, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        from timm.layers import PatchEmbed
        from timm.models.vision_transformer import Block

        self.pos_grid = (int(pos_grid[0]), int(pos_grid[1]))  # a list from a manifest too
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(
            img_size=(pos_grid[0] * patch_size, pos_grid[1] * patch_size),
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            strict_img_size=False,
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_grid[0] * pos_grid[1], embed_dim))
        self.pos_drop = nn.Dropout(0.0)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        dpr = [float(v) for v in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=dpr[i], norm_layer=norm_layer)
            for i in range(depth)
        )
        self.norm = norm_layer(embed_dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_vit_weights)

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position embedding resampled to a token grid (identity on the reference grid)."""
        if tuple(grid) == self.pos_grid:
            return self.pos_embed
        return resample_pos_embed(self.pos_embed, self.pos_grid, grid)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        x = self.patch_embed(x)
        x = self.pos_drop(x + self.pos_embed_for(grid))
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), grid


def resample_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Resample a (1, h*w, C) position embedding bilinearly (align_corners=True) to another grid."""
    n, c = pos_embed.shape[1], pos_embed.shape[2]
    if n != old_grid[0] * old_grid[1]:
        raise ValueError(f"pos_embed has {n} tokens, which is not a {old_grid[0]}x{old_grid[1]} grid")
    pe = pos_embed.transpose(1, 2).reshape(1, c, old_grid[0], old_grid[1])
    pe = F.interpolate(pe, size=tuple(new_grid), mode="bilinear", align_corners=True)
    return pe.flatten(2).transpose(1, 2)


def _init_vit_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _init_decoder_weights(m: nn.Module) -> None:
    """Kaiming-normal convs with PyTorch's default bias range, unit BN: the official init_weights."""
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        if m.bias is not None:
            fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(m.bias, -bound, bound)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _resnet(name: str, in_chans: int) -> nn.Module:
    import torchvision.models as tvm

    if name not in _CNN_CHANNELS:
        raise ValueError(f"TransFuse: unknown CNN backbone {name!r}; choose one of {sorted(_CNN_CHANNELS)}")
    net = getattr(tvm, name)(weights=None)
    if in_chans != 3:
        net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    net.layer4 = nn.Identity()
    return net


class TransFuse(nn.Module):
    """TransFuse with a configurable CNN / DeiT pair (S: resnet34 + DeiT-S depth 8; L: resnet50 + DeiT-B).

    ``forward(x)`` returns the ``map_2`` logits (B, num_classes, H, W); ``forward_all(x)`` returns
    a dict with all three heads and the attention maps:

    * ``map_x``, ``map_1``, ``map_2``: logits at the input size (deep-supervision heads);
    * ``bifusion_attention``: the three BiFusion spatial-attention maps (B, 1, H/16|H/8|H/4, W/..);
    * ``gate_attention``: the two attention-gate maps (B, 1, H/8|H/4, W/..).
    """

    def __init__(
        self,
        cnn: str = "resnet34",
        embed_dim: int = 384,
        depth: int = 8,
        num_heads: int = 6,
        pos_grid: tuple[int, int] = (12, 16),
        num_classes: int = 1,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.0,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"TransFuse: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.config: dict[str, Any] = {
            "cnn": cnn, "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads,
            "pos_grid": [int(pos_grid[0]), int(pos_grid[1])], "num_classes": num_classes, "in_chans": in_chans,
            "drop_rate": drop_rate, "drop_path_rate": drop_path_rate, "mlp_ratio": mlp_ratio,
        }
        self.num_classes = num_classes
        self.in_chans = in_chans
        c1, c2, c3 = _CNN_CHANNELS.get(cnn, (0, 0, 0))
        self.resnet = _resnet(cnn, in_chans)
        self.transformer = DeiTBranch(embed_dim, depth, num_heads, pos_grid, in_chans=in_chans,
                                      mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate)

        self.up1 = Up(embed_dim, c2)
        self.up2 = Up(c2, c1)

        self.final_x = nn.Sequential(
            Conv(c3, c1, 1, bn=True, relu=True),
            Conv(c1, c1, 3, bn=True, relu=True),
            Conv(c1, num_classes, 3, bn=False, relu=False),
        )
        self.final_1 = nn.Sequential(Conv(c1, c1, 3, bn=True, relu=True),
                                     Conv(c1, num_classes, 3, bn=False, relu=False))
        self.final_2 = nn.Sequential(Conv(c1, c1, 3, bn=True, relu=True),
                                     Conv(c1, num_classes, 3, bn=False, relu=False))

        self.up_c = BiFusionBlock(ch_1=c3, ch_2=embed_dim, r_2=4, ch_int=c3, ch_out=c3, drop_rate=drop_rate / 2)
        self.up_c_1_1 = BiFusionBlock(ch_1=c2, ch_2=c2, r_2=2, ch_int=c2, ch_out=c2, drop_rate=drop_rate / 2)
        self.up_c_1_2 = Up(c3, c2, c2, attn=True)
        self.up_c_2_1 = BiFusionBlock(ch_1=c1, ch_2=c1, r_2=1, ch_int=c1, ch_out=c1, drop_rate=drop_rate / 2)
        self.up_c_2_2 = Up(c2, c1, c1, attn=True)

        self.drop = nn.Dropout2d(drop_rate)
        for m in (self.up1, self.up2, self.final_x, self.final_1, self.final_2, self.up_c, self.up_c_1_1,
                  self.up_c_1_2, self.up_c_2_1, self.up_c_2_2):
            m.apply(_init_decoder_weights)

    @property
    def size_multiple(self) -> int:
        return 32

    def forward_all(self, imgs: torch.Tensor) -> dict[str, Any]:
        h, w = imgs.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"TransFuse: input height and width must be divisible by 32, got {h}x{w}")
        if imgs.shape[1] != self.in_chans:
            raise ValueError(f"TransFuse: expected {self.in_chans} input channels, got {imgs.shape[1]}")
        # transformer (bottom-up) path
        tokens, grid = self.transformer(imgs)
        x_b = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, grid[0], grid[1])
        x_b = self.drop(x_b)
        x_b_1 = self.drop(self.up1(x_b)[0])
        x_b_2 = self.drop(self.up2(x_b_1)[0])

        # CNN (top-down) path
        r = self.resnet
        x_u = r.maxpool(r.relu(r.bn1(r.conv1(imgs))))
        x_u_2 = self.drop(r.layer1(x_u))
        x_u_1 = self.drop(r.layer2(x_u_2))
        x_u = self.drop(r.layer3(x_u_1))

        # joint path
        x_c, att_16 = self.up_c(x_u, x_b)
        x_c_1_1, att_8 = self.up_c_1_1(x_u_1, x_b_1)
        x_c_1, gate_8 = self.up_c_1_2(x_c, x_c_1_1)
        x_c_2_1, att_4 = self.up_c_2_1(x_u_2, x_b_2)
        x_c_2, gate_4 = self.up_c_2_2(x_c_1, x_c_2_1)

        map_x = F.interpolate(self.final_x(x_c), scale_factor=16, mode="bilinear", align_corners=True)
        map_1 = F.interpolate(self.final_1(x_b_2), scale_factor=4, mode="bilinear", align_corners=True)
        map_2 = F.interpolate(self.final_2(x_c_2), scale_factor=4, mode="bilinear", align_corners=True)
        return {
            "map_x": map_x,
            "map_1": map_1,
            "map_2": map_2,
            "bifusion_attention": [att_16, att_8, att_4],
            "gate_attention": [gate_8, gate_4],
        }

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.forward_all(imgs)["map_2"]


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: TransFuse) -> dict[str, torch.Tensor]:
    """Map an official (or DataParallel-wrapped) TransFuse state_dict onto ``model``.

    Pure: returns a new dict. Strips ``module.`` prefixes and resamples a position embedding
    stored for another token grid (or with a leading CLS slot) to the model's reference grid.
    """
    out = strip_module_prefix(state_dict)
    key = "transformer.pos_embed"
    if key in out:
        pe = out[key]
        target = model.transformer.pos_grid
        n = pe.shape[1]
        if pe.ndim == 3 and n != target[0] * target[1]:
            side = math.isqrt(n - 1)
            if side * side == n - 1:  # an ImageNet DeiT embedding with its CLS slot: drop it
                pe, n = pe[:, 1:], n - 1
            old = _guess_grid(n, target)
            if old is not None:
                pe = resample_pos_embed(pe, old, target)
            out[key] = pe
    return out


def _guess_grid(n: int, like: tuple[int, int]) -> tuple[int, int] | None:
    """The h x w grid with n cells whose aspect ratio is closest to ``like`` (None if n is prime-ish)."""
    best = None
    target = like[0] / like[1]
    for h in range(1, n + 1):
        if n % h == 0:
            w = n // h
            score = abs(math.log((h / w) / target))
            if best is None or score < best[0]:
                best = (score, (h, w))
    return best[1] if best else None


# ---- factories (the reference configurations of the paper / official code) ----------------------

def transfuse_s(**kwargs: Any) -> TransFuse:
    """TransFuse-S: ResNet-34 + DeiT-S (depth 8), 26,248,725 parameters."""
    cfg: dict[str, Any] = dict(cnn="resnet34", embed_dim=384, depth=8, num_heads=6, pos_grid=(12, 16))
    cfg.update(kwargs)
    return TransFuse(**cfg)


def transfuse_l(**kwargs: Any) -> TransFuse:
    """TransFuse-L: ResNet-50 + DeiT-B (depth 12), 143,540,789 parameters."""
    cfg: dict[str, Any] = dict(cnn="resnet50", embed_dim=768, depth=12, num_heads=12, pos_grid=(12, 16))
    cfg.update(kwargs)
    return TransFuse(**cfg)


def transfuse_l_384(**kwargs: Any) -> TransFuse:
    """TransFuse-L* : ResNet-50 + DeiT-B-384, position grid 24x32 (384x512 input)."""
    cfg: dict[str, Any] = dict(cnn="resnet50", embed_dim=768, depth=12, num_heads=12, pos_grid=(24, 32))
    cfg.update(kwargs)
    return TransFuse(**cfg)


def transfuse_demo(**kwargs: Any) -> TransFuse:
    """The demo configuration (smaller than the paper's, for CPU training on synthetic frames):
    ResNet-18 + 4 DeiT-Ti-width blocks (192, 3 heads), 7,835,301 parameters."""
    cfg: dict[str, Any] = dict(cnn="resnet18", embed_dim=192, depth=4, num_heads=3, pos_grid=(12, 16))
    cfg.update(kwargs)
    return TransFuse(**cfg)


def transfuse_tiny(**kwargs: Any) -> TransFuse:
    """A tiny configuration for tests and quick demos (ResNet-18, 2 blocks of width 64)."""
    cfg: dict[str, Any] = dict(cnn="resnet18", embed_dim=64, depth=2, num_heads=2, pos_grid=(2, 2))
    cfg.update(kwargs)
    return TransFuse(**cfg)
