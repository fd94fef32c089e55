"""CrossViT attention maps, captured with forward hooks during an ordinary forward pass.

* CLS cross-attention: in each multi-scale block ``k``, ``blocks[k].fusion[0]`` lets the S-branch
  CLS token attend over the L-branch tokens (B, H_L, 1, 1 + 14*14) and ``fusion[1]`` the L-branch
  CLS over the S-branch tokens (B, H_S, 1, 1 + 20*20). timm's CrossAttention computes the softmax
  explicitly; the map is the input of its ``attn_drop``.
* CLS self-attention: the CLS row of the last transformer block of each branch. timm runs these
  blocks through fused scaled-dot-product attention, which never materialises the weights, so
  while capturing, those two blocks are switched to timm's explicit path (``fused_attn=False``;
  mathematically the same attention) and restored afterwards.

Maps are returned per head and as the mean over heads, on the patch grid, CLS dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class AttentionMap:
    """One captured map: ``heads`` (B, H, h, w) on the patch grid of ``branch``."""

    name: str
    heads: torch.Tensor
    branch: str
    description: str

    @property
    def mean(self) -> torch.Tensor:
        return self.heads.mean(dim=1)


def _grid(n_tokens: int) -> tuple[int, int]:
    side = math.isqrt(n_tokens)
    if side * side != n_tokens:
        raise ValueError(f"cannot lay out {n_tokens} patch tokens on a square grid")
    return side, side


@dataclass
class CrossViTAttention:
    """``with CrossViTAttention(model) as cap: model(x)`` then ``cap.maps()``.

    Capturing holds the maps of the last forward pass only; hooks are removed on exit.
    """

    model: nn.Module
    self_attention: bool = True
    _handles: list[Any] = field(default_factory=list, init=False, repr=False)
    _captured: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    _restore: list[tuple[nn.Module, bool]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        blocks = getattr(self.model, "blocks", None)
        if blocks is None or not all(hasattr(b, "fusion") for b in blocks):
            raise ValueError(f"{type(self.model).__name__} is not a timm CrossViT (no blocks[k].fusion)")

    def _hook(self, key: str):
        def capture(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            self._captured[key] = args[0].detach().float()

        return capture

    def __enter__(self) -> CrossViTAttention:
        self._captured.clear()
        for k, block in enumerate(self.model.blocks):
            for i, fusion in enumerate(block.fusion):
                attn = getattr(fusion, "attn", None)
                if attn is None:  # a branch without fusion (not in the published variants)
                    continue
                self._handles.append(attn.attn_drop.register_forward_pre_hook(self._hook(f"cross/{k}/{i}")))
        if self.self_attention:
            last = self.model.blocks[-1]
            for d, branch in enumerate(last.blocks):
                attn = branch[-1].attn
                self._restore.append((attn, bool(getattr(attn, "fused_attn", False))))
                attn.fused_attn = False
                self._handles.append(attn.attn_drop.register_forward_pre_hook(self._hook(f"self/{d}")))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for attn, fused in self._restore:
            attn.fused_attn = fused
        self._restore.clear()

    def maps(self) -> list[AttentionMap]:
        """The maps of the last forward pass, in block order (cross-attention), then self-attention."""
        if not self._captured:
            raise RuntimeError("no attention captured: run the model inside the 'with' block first")
        out: list[AttentionMap] = []
        branches = ("S", "L")
        for key in sorted(k for k in self._captured if k.startswith("cross/")):
            _, k, i = key.split("/")
            a = self._captured[key]  # (B, H, 1, 1 + N) of the *other* branch's tokens
            src, dst = branches[int(i)], branches[1 - int(i)]
            heads = a[:, :, 0, 1:]
            out.append(AttentionMap(
                name=f"cross-attention block {int(k) + 1} {src}-CLS→{dst}",
                heads=heads.reshape(heads.shape[0], heads.shape[1], *_grid(heads.shape[-1])),
                branch=dst,
                description=f"CLS token of branch {src} attending over the patches of branch {dst}",
            ))
        for key in sorted(k for k in self._captured if k.startswith("self/")):
            d = int(key.split("/")[1])
            a = self._captured[key]  # (B, H, N, N)
            heads = a[:, :, 0, 1:]
            out.append(AttentionMap(
                name=f"self-attention {branches[d]}-CLS (last block)",
                heads=heads.reshape(heads.shape[0], heads.shape[1], *_grid(heads.shape[-1])),
                branch=branches[d],
                description=f"CLS row of the last self-attention block of branch {branches[d]}",
            ))
        return out
