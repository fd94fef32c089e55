"""Fine-tuning a 2D segmentation model (TransFuse family) on an export folder, as a generator of events.

``finetune(cfg)`` yields :class:`Event` objects (``epoch`` with train loss and validation Dice,
``checkpoint`` with its path) and returns a :class:`FinetuneResult`. The steps:

1. the export folder's cases (``imagesTr``/``labelsTr``, PNG frames) are split into training and
   validation with a fixed seed (``val_fraction``);
2. the base model (registry name + optional checkpoint) is scored on the validation cases first;
3. each epoch trains with TransFuse's loss (structure loss on ``map_2``, ``map_1``, ``map_x`` with
   weights 0.5 / 0.3 / 0.2; Adam with betas (0.5, 0.999) and gradient clipping 2.0 as in the
   official ISIC script), scores the validation cases, and writes ``epoch_NNN.pt`` atomically
   (weights, optimiser state, history) so that an interrupted run resumes (``resume=True``);
4. early stopping after ``patience`` epochs without improvement;
5. promotion: the best epoch becomes ``versions/vN.safetensors`` (with a manifest: base checkpoint
   sha256, data summary, both Dice figures) and ``active.json`` points at it only if it beats
   the base on the same validation cases; otherwise the base stays active and the result says
   so with both figures. :func:`rollback` makes an earlier version active again.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_medvit.inference import resolve_device
from napari_medvit.io import atomic_write, read_image
from napari_medvit.models import create_model
from napari_medvit.models.checkpoint import Manifest, file_sha256, save_checkpoint
from napari_medvit.models.manifest import strip_module_prefix
from napari_medvit.transforms import scale_to_unit


@dataclass
class FinetuneConfig:
    dataset: str
    out_dir: str
    model: str = "transfuse_s"
    checkpoint: str | None = None
    epochs: int = 10
    lr: float = 7e-5
    batch_size: int = 4
    val_fraction: float = 0.25
    seed: int = 0
    size: tuple[int, int] | None = None  # training size; default: the model's preprocessing size
    patience: int = 5
    augment: bool = True
    device: str = "cpu"
    resume: bool = False
    config_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Event:
    kind: str  # "baseline" | "step" | "epoch" | "checkpoint"
    epoch: int
    train_loss: float | None = None
    val_dice: float | None = None
    path: str | None = None


@dataclass
class FinetuneResult:
    promoted: bool
    base_dice: float
    best_dice: float
    best_epoch: int
    version: str | None
    message: str
    history: list[dict[str, float]]


def structure_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TransFuse/PraNet structure loss: boundary-weighted BCE + weighted IoU, averaged over the batch."""
    weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    wbce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    pred = torch.sigmoid(logits)
    inter = (pred * mask * weit).sum(dim=(2, 3))
    union = ((pred + mask) * weit).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def transfuse_loss(out: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    return 0.5 * structure_loss(out["map_2"], mask) + 0.3 * structure_loss(out["map_1"], mask) + \
        0.2 * structure_loss(out["map_x"], mask)


def load_cases(dataset: str | Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(case id, RGB frame, binary mask) for every case of a 2D export folder."""
    root = Path(dataset)
    info_path = root / "dataset.json"
    if not info_path.is_file():
        raise ValueError(f"{root}: no dataset.json — export corrected masks into this folder first")
    info = json.loads(info_path.read_text())
    if info.get("file_ending") != ".png":
        raise ValueError(f"{root}: fine-tuning 2D models needs PNG frames, the folder holds {info.get('file_ending')}")
    cases = []
    for label_file in sorted((root / "labelsTr").glob("*.png")):
        case = label_file.name[: -len(".png")]
        image_file = root / "imagesTr" / f"{case}_0000.png"
        if not image_file.is_file():
            raise ValueError(f"{root}: case {case} has labels but no image {image_file.name}")
        image, _ = read_image(image_file)
        labels, _ = read_image(label_file)
        cases.append((case, image, (labels > 0).astype(np.float32)))
    if len(cases) < 2:
        raise ValueError(f"{root}: {len(cases)} case(s); fine-tuning needs at least 2 (training and validation)")
    return cases


def split(case_ids: list[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A fixed, seeded split: the same ids and seed always give the same validation cases."""
    order = np.random.default_rng(seed).permutation(len(case_ids))
    n_val = min(max(1, int(round(len(case_ids) * val_fraction))), len(case_ids) - 1)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def _tensors(cases: list[tuple[str, np.ndarray, np.ndarray]], idx: list[int], size: tuple[int, int], mean, std):
    images, masks = [], []
    for i in idx:
        _, image, mask = cases[i]
        x = torch.from_numpy(scale_to_unit(image[..., :3] if image.ndim == 3 else image, rgb=image.ndim == 3))
        x = x.permute(2, 0, 1) if x.ndim == 3 else x[None].expand(3, -1, -1)
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        images.append((x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))
        masks.append(F.interpolate(torch.from_numpy(mask)[None, None], size=size, mode="nearest")[0])
    return torch.stack(images), torch.stack(masks)


@torch.no_grad()
def dice_score(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean Dice of ``sigmoid(model(x)) > 0.5`` (an empty mask predicted empty counts 1)."""
    model.eval()
    scores = []
    for x, m in zip(images, masks):
        pred = (torch.sigmoid(model(x[None])) > 0.5).float()[0]
        inter, total = float((pred * m).sum()), float(pred.sum() + m.sum())
        scores.append(1.0 if total == 0 else 2 * inter / total)
    return float(np.mean(scores))


def _augment(x: torch.Tensor, m: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if torch.rand(1, generator=gen) < 0.5:
        x, m = x.flip(-1), m.flip(-1)
    if torch.rand(1, generator=gen) < 0.5:
        x, m = x.flip(-2), m.flip(-2)
    return x, m


def finetune(cfg: FinetuneConfig) -> Generator[Event, None, FinetuneResult]:
    out = Path(cfg.out_dir)
    (out / "versions").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    cases = load_cases(cfg.dataset)
    train_idx, val_idx = split([c[0] for c in cases], cfg.val_fraction, cfg.seed)
    device = resolve_device(cfg.device)
    base = create_model(cfg.model, checkpoint=cfg.checkpoint, **cfg.config_overrides).to(device)
    pre = base.medvit_spec.preprocessing
    size = tuple(cfg.size or pre.get("resize") or (192, 256))
    xs_t, ms_t = (t.to(device) for t in _tensors(cases, train_idx, size, pre["mean"], pre["std"]))
    xs_v, ms_v = (t.to(device) for t in _tensors(cases, val_idx, size, pre["mean"], pre["std"]))
    base_dice = dice_score(base, xs_v, ms_v)
    yield Event("baseline", 0, val_dice=base_dice)

    model = base
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    history: list[dict[str, float]] = []
    start = 1
    last = sorted(out.glob("epoch_*.pt"))
    if cfg.resume and last:
        state = torch.load(last[-1], map_location=device, weights_only=True)
        model.load_state_dict(strip_module_prefix(state["model"]))
        opt.load_state_dict(state["optimizer"])
        history = [dict(h) for h in state["history"]]
        start = int(state["epoch"]) + 1
    best = max(history, key=lambda h: h["val_dice"], default=None)
    gen = torch.Generator().manual_seed(cfg.seed + start)
    for epoch in range(start, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(xs_t), generator=gen).to(device)
        losses = []
        for b in range(0, len(order), cfg.batch_size):
            idx = order[b:b + cfg.batch_size]
            x, m = xs_t[idx], ms_t[idx]
            if cfg.augment:
                x, m = _augment(x, m, gen)
            loss = transfuse_loss(model.forward_all(x), m)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
            opt.step()
            losses.append(float(loss))
            yield Event("step", epoch, train_loss=losses[-1])  # lets a GUI show progress and cancel between steps
        val = dice_score(model, xs_v, ms_v)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_dice": val})
        ckpt = out / f"epoch_{epoch:03d}.pt"
        payload = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "history": history}
        atomic_write(ckpt, lambda tmp: torch.save(payload, tmp))
        if best is None or val > best["val_dice"]:
            best = history[-1]
            atomic_write(out / "best.pt", lambda tmp: torch.save({"model": model.state_dict(), "epoch": epoch}, tmp))
        yield Event("epoch", epoch, train_loss=history[-1]["train_loss"], val_dice=val)
        yield Event("checkpoint", epoch, path=str(ckpt))
        if epoch - int(best["epoch"]) >= cfg.patience:
            break

    best_dice = float(best["val_dice"]) if best else base_dice
    if best is None or not best_dice > base_dice:
        return FinetuneResult(False, base_dice, best_dice, int(best["epoch"]) if best else 0, None,
                              f"not promoted: validation Dice {best_dice:.3f} does not beat the base model's "
                              f"{base_dice:.3f} on the same {len(val_idx)} case(s); the base stays active", history)
    weights = torch.load(out / "best.pt", map_location=device, weights_only=True)["model"]
    model.load_state_dict(weights)
    model.cpu()
    n = len(list((out / "versions").glob("v*.safetensors"))) + 1
    version = out / "versions" / f"v{n}.safetensors"
    manifest = Manifest(
        arch=cfg.model, config=getattr(model, "config", {}), class_names=list(base.medvit_spec.class_names),
        preprocessing={}, trained=True, description=f"fine-tuned on {Path(cfg.dataset).name}",
        extra={"base_checkpoint": cfg.checkpoint or "untrained", "base_sha256":
               file_sha256(cfg.checkpoint) if cfg.checkpoint and Path(cfg.checkpoint).is_file() else "",
               "train_cases": [cases[i][0] for i in train_idx], "val_cases": [cases[i][0] for i in val_idx],
               "base_val_dice": base_dice, "val_dice": best_dice, "epoch": int(best["epoch"])})
    save_checkpoint(model, version, manifest)
    _set_active(out, version)
    return FinetuneResult(True, base_dice, best_dice, int(best["epoch"]), str(version),
                          f"promoted {version.name}: validation Dice {best_dice:.3f} > base {base_dice:.3f}", history)


def _set_active(out: Path, version: Path) -> None:
    record = {"active": str(version), "sha256": file_sha256(version)}
    atomic_write(out / "active.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))


def active_checkpoint(out_dir: str | Path) -> str | None:
    path = Path(out_dir) / "active.json"
    return json.loads(path.read_text())["active"] if path.is_file() else None


def rollback(out_dir: str | Path, version: str) -> str:
    """Make an earlier version (e.g. ``"v1"``) active again; returns its path."""
    target = Path(out_dir) / "versions" / f"{version}.safetensors"
    if not target.is_file():
        available = sorted(p.stem for p in (Path(out_dir) / "versions").glob("v*.safetensors"))
        raise ValueError(f"no version {version!r} in {out_dir}; available: {available}")
    _set_active(Path(out_dir), target)
    return str(target)

