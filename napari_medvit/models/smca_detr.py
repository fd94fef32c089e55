"""SMCA-DETR: DETR with Spatially Modulated Co-Attention (single-scale variant).

Paper: Gao, Zheng, Wang, Dai, Li. "Fast Convergence of DETR with Spatially Modulated
Co-Attention", ICCV 2021. Official code: gaopengcuhk/SMCA-DETR (models/transformer.py,
attention_layer.py, detr.py); module names and state_dict keys follow it, so an official
single-scale checkpoint loads strictly.

What SMCA adds to DETR: in decoder layer 0 each object query predicts a box centre
``ref = MLP(norm4(tgt + query_pos))`` (pre-sigmoid), placed on the feature grid as
``sigmoid(ref) * [w, h] / 32``; every decoder layer adds per-head offsets ``point2`` and
predicts per-head scales ``point3`` (dynamic-scale type1: none, type2: one per head, type3: x and
y per head (default), type4: x, y and xy). The co-attention logits of each head get
``log G = -sum s^2 (p - grid)^2 / beta`` added before the softmax, so each query looks near its
own centre first. Here the stock ``nn.MultiheadAttention`` carries it as a float ``attn_mask``
(added to the scaled q.k logits, exactly where the official layer adds it). The predicted box
centre is offset from ``ref``: ``boxes[..., :2] = sigmoid(bbox[..., :2] + ref)``.

``gaussian=False`` is the ablation of the paper's claim ("SMCA converges faster than DETR"): the
co-attention runs without ``log G`` (DETR's plain co-attention), everything else equal (same
reference-point box parameterisation, queries, losses); ``point2``/``point3`` then get no gradient
and the ``log_gaussians`` that ``forward_all`` still returns are not used by the model.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from napari_medvit.models.manifest import strip_module_prefix

__all__ = ["SMCADETR", "checkpoint_filter_fn", "smca_detr_r50", "smca_detr_tiny"]

_SCALE_DIMS = {"type1": 0, "type2": 1, "type3": 2, "type4": 3}


class MLP(nn.Module):
    """Feed-forward network with ReLU between ``num_layers`` linear layers (DETR's MLP)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [output_dim], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


def sine_position_embedding(mask: torch.Tensor, num_pos_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised sine position embedding (B, 2*num_pos_feats, h, w) from a padding mask."""
    not_mask = ~mask
    y = not_mask.cumsum(1, dtype=torch.float32)
    x = not_mask.cumsum(2, dtype=torch.float32)
    eps, scale = 1e-6, 2 * math.pi
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=mask.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
    px, py = x[:, :, :, None] / dim_t, y[:, :, :, None] / dim_t
    px = torch.stack((px[:, :, :, 0::2].sin(), px[:, :, :, 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[:, :, :, 0::2].sin(), py[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


class EncoderLayer(nn.Module):
    """Post-norm DETR encoder layer (self-attention with positions added to q and k, then FFN)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        q = k = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, value=src, key_padding_mask=key_padding_mask,
                                                            need_weights=False)[0]))
        src2 = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(src2))


class DecoderLayer(nn.Module):
    """Decoder layer with Gaussian-modulated co-attention (official ``forward_post``)."""

    def __init__(self, layer_index: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 dynamic_scale: str, smooth: float) -> None:
        super().__init__()
        if dynamic_scale not in _SCALE_DIMS:
            raise ValueError(f"dynamic_scale must be one of {sorted(_SCALE_DIMS)}, got {dynamic_scale!r}")
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.smooth = smooth
        self.dynamic_scale = dynamic_scale
        self.nhead = nhead
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.norm4 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        if layer_index == 0:
            self.point1 = MLP(d_model, d_model, 2, 3)
        self.point2 = nn.Linear(d_model, 2 * nhead)
        if _SCALE_DIMS[dynamic_scale]:
            self.point3 = nn.Linear(d_model, _SCALE_DIMS[dynamic_scale] * nhead)
        self.layer_index = layer_index
        self.gaussian = True  # False: co-attention without the spatial prior (plain DETR's), all else equal

    def forward(self, grid: torch.Tensor, w_h: torch.Tensor, tgt: torch.Tensor, memory: torch.Tensor,
                pos: torch.Tensor, query_pos: torch.Tensor, key_padding_mask: torch.Tensor | None,
                ref_cells: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Returns (tgt, pre-sigmoid reference (layer 0 only), reference in cells, log-Gaussian).

        grid: (HW, 2) cell coordinates (x, y); w_h: (B, 2) image width and height.
        The log-Gaussian has shape (B * nhead, Q, HW), batch-major like nn.MultiheadAttention.
        """
        q_len, bsz = tgt.shape[0], tgt.shape[1]
        out = self.norm4(tgt + query_pos)
        offset = self.point2(out)  # (Q, B, 2H)

        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, value=tgt, need_weights=False)[0]))

        ref_logits = None
        if self.layer_index == 0:
            ref_logits = self.point1(out)  # (Q, B, 2), pre-sigmoid centre
            ref_cells = (w_h[None] * ref_logits.sigmoid() / 32).repeat(1, 1, self.nhead)
        point = (ref_cells + offset).view(q_len, bsz * self.nhead, 2)
        distance = (point.unsqueeze(1) - grid[None, :, None, :]).pow(2)  # (Q, HW, B*H, 2)
        n_scale = _SCALE_DIMS[self.dynamic_scale]
        if n_scale == 0:
            distance = distance.sum(-1)
        else:
            scale = self.point3(out).pow(2).reshape(q_len, bsz * self.nhead, n_scale).unsqueeze(1)
            if n_scale == 1:
                distance = distance.sum(-1) * scale[..., 0]
            elif n_scale == 2:
                distance = (distance * scale).sum(-1)
            else:
                distance = (torch.cat([distance, distance.prod(-1, keepdim=True)], -1) * scale).sum(-1)
        log_gaussian = (-distance.abs() / self.smooth).permute(2, 0, 1)  # (B*H, Q, HW)

        tgt2 = self.multihead_attn(query=tgt + query_pos, key=memory + pos, value=memory,
                                   key_padding_mask=key_padding_mask, attn_mask=log_gaussian if self.gaussian else None,
                                   need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        tgt2 = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        tgt = self.norm3(tgt + self.dropout3(tgt2))
        return tgt, ref_logits, ref_cells, log_gaussian


class Encoder(nn.Module):
    def __init__(self, layer: EncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))


class Decoder(nn.Module):
    def __init__(self, layers: list[DecoderLayer], d_model: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)


class Transformer(nn.Module):
    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, smooth: float = 8.0,
                 dynamic_scale: str = "type3") -> None:
        super().__init__()
        self.encoder = Encoder(EncoderLayer(d_model, nhead, dim_feedforward, dropout), num_encoder_layers)
        self.decoder = Decoder([DecoderLayer(i, d_model, nhead, dim_feedforward, dropout, dynamic_scale, smooth)
                                for i in range(num_decoder_layers)], d_model)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for layer in self.decoder.layers:
            if hasattr(layer, "point3"):  # scales start at 1 (official init)
                nn.init.zeros_(layer.point3.weight)
                nn.init.ones_(layer.point3.bias)
        self.d_model, self.nhead = d_model, nhead


class ResNetBackbone(nn.Module):
    """torchvision ResNet, features of layer4 (stride 32), as DETR's ``body``.

    BatchNorm is frozen as in the official code, which starts from ImageNet weights; a backbone
    trained from scratch needs ``frozen_bn=False`` (frozen statistics of random weights let the
    activations grow without bound).
    """

    def __init__(self, name: str = "resnet50", frozen_bn: bool = True) -> None:
        super().__init__()
        import torchvision
        from torchvision.ops.misc import FrozenBatchNorm2d

        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        body = getattr(torchvision.models, name)(weights=None, norm_layer=norm)
        body.avgpool = nn.Identity()
        body.fc = nn.Identity()
        self.body = body
        self.num_channels = 512 if name in ("resnet18", "resnet34") else 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))


class SMCADETR(nn.Module):
    """Single-scale SMCA-DETR. ``model(x)`` -> {'pred_logits': (B, Q, K+1), 'pred_boxes': (B, Q, 4)}.

    ``forward_all(x)`` adds ``aux_outputs`` (earlier decoder layers), ``log_gaussians`` (one
    (B, heads, Q, h, w) tensor per decoder layer: the spatial prior log G on the stride-32 grid)
    and ``reference`` (B, Q, 2): each query's normalised (cx, cy) centre estimate.
    """

    def __init__(self, num_classes: int = 91, num_queries: int = 300, d_model: int = 256, nhead: int = 8,
                 num_encoder_layers: int = 6, num_decoder_layers: int = 6, dim_feedforward: int = 2048,
                 dropout: float = 0.1, smooth: float = 8.0, dynamic_scale: str = "type3",
                 backbone: str = "resnet50", frozen_bn: bool = True, gaussian: bool = True) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "num_classes": num_classes, "num_queries": num_queries, "d_model": d_model, "nhead": nhead,
            "num_encoder_layers": num_encoder_layers, "num_decoder_layers": num_decoder_layers,
            "dim_feedforward": dim_feedforward, "dropout": dropout, "smooth": smooth,
            "dynamic_scale": dynamic_scale, "backbone": backbone, "frozen_bn": frozen_bn, "gaussian": gaussian,
        }
        self.num_classes = num_classes
        self.head_prefixes = ("class_embed",)  # the class head (create_model(new_head=True) re-initialises it)
        self.num_queries = num_queries
        self.transformer = Transformer(d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward,
                                       dropout, smooth, dynamic_scale)
        for layer in self.transformer.decoder.layers:  # False: the ablation "Gaussian modulation off"
            layer.gaussian = gaussian
        self.class_embed = nn.Linear(d_model, num_classes + 1)
        nn.init.constant_(self.class_embed.bias, -math.log((1 - 0.01) / 0.01))  # prior probability 0.01
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.query_embed = nn.Embedding(num_queries, d_model)
        body = ResNetBackbone(backbone, frozen_bn)
        self.input_proj = nn.Conv2d(body.num_channels, d_model, kernel_size=1)
        self.backbone = nn.ModuleList([body])  # official Joiner: backbone.0.body.*

    def forward_all(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, Any]:
        bsz, _, img_h, img_w = images.shape
        features = self.backbone[0](images)
        h, w = features.shape[-2:]
        if mask is None:
            feat_mask = torch.zeros((bsz, h, w), dtype=torch.bool, device=images.device)
            w_h = torch.tensor([[img_w, img_h]], dtype=torch.float32, device=images.device).expand(bsz, 2)
        else:  # padded batch: True on padding; the unpadded size drives the reference points
            feat_mask = F.interpolate(mask[None].float(), size=(h, w))[0].bool()
            w_h = torch.stack([(~mask).any(1).sum(1), (~mask).any(2).sum(1)], dim=1).float()
        pos = sine_position_embedding(feat_mask, self.transformer.d_model // 2).to(features.dtype)

        src = self.input_proj(features).flatten(2).permute(2, 0, 1)  # (HW, B, d)
        pos = pos.flatten(2).permute(2, 0, 1)
        key_padding = feat_mask.flatten(1) if mask is not None else None
        gy, gx = torch.meshgrid(torch.arange(h, device=images.device), torch.arange(w, device=images.device),
                                indexing="ij")
        grid = torch.stack((gx, gy), -1).reshape(-1, 2).float()

        memory = src
        for layer in self.transformer.encoder.layers:
            memory = layer(memory, pos, key_padding)

        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, bsz, 1)
        tgt = torch.zeros_like(query_pos)
        hs, log_gaussians = [], []
        ref_logits = ref_cells = None
        for layer in self.transformer.decoder.layers:
            tgt, r, ref_cells, log_g = layer(grid, w_h, tgt, memory, pos, query_pos, key_padding, ref_cells)
            ref_logits = r if r is not None else ref_logits
            hs.append(self.transformer.decoder.norm(tgt))
            nhead = layer.nhead
            log_gaussians.append(log_g.view(bsz, nhead, -1, h, w))
        hs_t = torch.stack(hs).transpose(1, 2)  # (L, B, Q, d)
        logits = self.class_embed(hs_t)
        coords = self.bbox_embed(hs_t)
        assert ref_logits is not None, "the first decoder layer gives the reference points"
        ref = ref_logits.transpose(0, 1)  # (B, Q, 2)
        coords = torch.cat([coords[..., :2] + ref, coords[..., 2:]], dim=-1).sigmoid()
        return {
            "pred_logits": logits[-1],
            "pred_boxes": coords[-1],
            "aux_outputs": [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], coords[:-1], strict=True)],
            "log_gaussians": log_gaussians,
            "reference": ref.sigmoid(),
        }

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.forward_all(images)
        return {"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]}


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Official checkpoints: strip ``module.``; drop the position-embedding slot (no parameters)."""
    return strip_module_prefix(state_dict)


def smca_detr_r50(**kwargs: Any) -> SMCADETR:
    """Single-scale SMCA-DETR, ResNet-50, type3 scales, 300 queries, 91 classes: 41,760,482 parameters."""
    return SMCADETR(**kwargs)


def smca_detr_tiny(**kwargs: Any) -> SMCADETR:
    """A tiny configuration for tests (ResNet-18, width 32, 2+2 layers, 10 queries): not from the paper."""
    cfg: dict[str, Any] = dict(num_classes=2, num_queries=10, d_model=32, nhead=4, num_encoder_layers=2,
                               num_decoder_layers=2, dim_feedforward=64, backbone="resnet18")
    cfg.update(kwargs)
    return SMCADETR(**cfg)


def smca_detr_demo(**kwargs: Any) -> SMCADETR:
    """The demo configuration (not from the paper): ResNet-18 with trainable batch norm (the weights start
    untrained: frozen statistics of random weights would not train), width 128, 8 heads, 3+3 layers, FFN 512,
    20 queries, 1 class; 12.7 M parameters."""
    cfg: dict[str, Any] = dict(num_classes=1, num_queries=20, d_model=128, nhead=8, num_encoder_layers=3,
                               num_decoder_layers=3, dim_feedforward=512, backbone="resnet18", frozen_bn=False)
    cfg.update(kwargs)
    return SMCADETR(**cfg)
