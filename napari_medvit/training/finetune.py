"""Fine-tuning any registered model on an export folder, as a generator of events.

``finetune(cfg)`` yields :class:`Event` objects (``baseline``, ``step``, ``epoch`` with train loss
and the validation metric, ``checkpoint`` with its path) and returns a :class:`FinetuneResult`.
The task kind (see :mod:`napari_medvit.training.tasks`) follows from the model: 2D/3D
segmentation, classification (CrossViT, timm baselines, DAFT with tabular rows and its image-only 3D
ResNet) or detection
(SMCA-DETR); each brings its paper's loss, optimiser and validation metric. The steps:

1. the export folder's cases are split into training and validation with a fixed seed
   (``val_fraction``);
2. the base model (registry name + optional checkpoint) is scored on the validation cases first;
3. each epoch trains (mixed precision with ``precision`` "bf16"/"fp16"), scores the validation
   cases, and writes ``epoch_NNN.pt`` atomically (weights, optimiser state, history; the previous
   epoch's file is removed) so that an interrupted run resumes (``resume=True``), and ``history.json``
   (the curves: train loss and validation metric per epoch);
4. early stopping after ``patience`` epochs without improvement, or after the epoch that ends past
   ``max_minutes`` of training (a time budget; the result and the manifest say so);
5. promotion: the best epoch becomes ``versions/vN.safetensors`` (with a manifest: base checkpoint
   sha256, data summary, both metric figures) and ``active.json`` points at it only if it beats
   the base on the same validation cases; otherwise the base stays active and the result says
   so with both figures. :func:`rollback` makes an earlier version active again.

Launched by ``torchrun --nproc_per_node N`` (e.g. ``torchrun --nproc_per_node 2 -m napari_medvit.cli
finetune ...``) the same generator runs data-parallel in every process (DistributedDataParallel; nccl
on CUDA with each process on ``cuda:LOCAL_RANK``, gloo on CPU): one step consumes ``N × batch_size``
cases, see :mod:`napari_medvit.training.distributed` for the exact semantics. Without torchrun's
environment nothing changes.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medvit.inference import resolve_device
from napari_medvit.inference.predictor import autocast_dtype
from napari_medvit.io import atomic_write
from napari_medvit.models import create_model, get_spec
from napari_medvit.models.checkpoint import Manifest, file_sha256, save_checkpoint
from napari_medvit.models.manifest import strip_module_prefix
from napari_medvit.training.tasks import Task, make_task, split, task_class  # noqa: F401  (split: public API)


@dataclass
class FinetuneConfig:
    dataset: str
    out_dir: str
    model: str = "transfuse_s"
    checkpoint: str | None = None
    epochs: int = 10
    lr: float | None = None  # default: the task's (the paper's) learning rate
    batch_size: int = 4  # per process: under torchrun one step consumes world size × batch_size cases
    val_fraction: float = 0.25
    seed: int = 0
    size: tuple[int, ...] | None = None  # training size; default: the model's preprocessing size
    patience: int = 5
    augment: str = "standard"  # "none" | "flips" | "standard"
    device: str = "cpu"
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" (fp16 on CUDA only)
    resume: bool = False
    max_minutes: float | None = None  # stop after the epoch that ends past this much training time
    config_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Event:
    kind: str  # "baseline" | "step" | "epoch" | "checkpoint"
    epoch: int
    train_loss: float | None = None
    val_metric: float | None = None
    metric: str = ""  # the validation metric's name, e.g. "Dice", "balanced accuracy", "AP50"
    path: str | None = None


@dataclass
class FinetuneResult:
    promoted: bool
    metric: str
    base_metric: float
    best_metric: float
    best_epoch: int
    version: str | None
    message: str
    history: list[dict[str, float]]


def _autocast(device: torch.device, precision: str) -> Any:
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError(f"precision fp16 trains on CUDA only (device is {device.type}); use bf16 or fp32")
    return torch.autocast(device_type=device.type, dtype=dtype)


def finetune(cfg: FinetuneConfig) -> Generator[Event, None, FinetuneResult]:
    """Run ``cfg`` (see the module docstring); under torchrun, one process of a data-parallel run.

    Launched by ``torchrun --nproc_per_node W``, every process runs this generator: each takes its
    share of each epoch's seeded permutation (``distributed.shard``), trains
    ``DistributedDataParallel(MethodDispatch(model))`` and so one step consumes ``W × batch_size``
    cases. All processes score the validation cases on the unwrapped model and use rank 0's figure,
    so early stopping and promotion agree; only rank 0 writes files (epoch checkpoints, best.pt,
    versions, active.json) and yields events, the others return the same result.
    """
    from napari_medvit.training import distributed

    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        raise ValueError(f"max_minutes must be positive, got {cfg.max_minutes}")
    ctx = distributed.setup(resolve_device(cfg.device))
    try:
        result = yield from _finetune(cfg, ctx)
        ctx.barrier()  # nobody leaves (and destroys the group) while rank 0 still writes
        return result
    finally:
        ctx.shutdown()


def _finetune(cfg: FinetuneConfig, ctx: Any) -> Generator[Event, None, FinetuneResult]:
    from napari_medvit.training import distributed

    main = ctx.is_main
    out = Path(cfg.out_dir)
    if main:
        (out / "versions").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = ctx.device
    spec = get_spec(cfg.model)
    base_names = _checkpoint_class_names(cfg.checkpoint) or list(spec.class_names)
    data_overrides = task_class(spec).model_overrides(cfg.dataset, spec, base_names)
    # a checkpoint whose head has other classes than the data's: keep the rest, start a new head
    new_head = bool(cfg.checkpoint) and bool(data_overrides)
    base = create_model(cfg.model, checkpoint=cfg.checkpoint, new_head=new_head,
                        **{**data_overrides, **cfg.config_overrides}).to(device)
    base, synced_bn = distributed.sync_batchnorm(base, ctx)
    task: Task = make_task(cfg.dataset, base, device, val_fraction=cfg.val_fraction, seed=cfg.seed,
                           size=tuple(cfg.size) if cfg.size else None, augment=cfg.augment)
    if task.n_train == 0:
        raise ValueError(f"val_fraction {cfg.val_fraction} leaves no training cases")
    metric = task.metric
    amp = _autocast(device, cfg.precision)  # checked before the (slow) baseline
    base_metric = ctx.broadcast_float(task.evaluate(base))
    if main:
        yield Event("baseline", 0, val_metric=base_metric, metric=metric)

    model = base
    opt = task.optimizer(model.parameters(), cfg.lr or task.default_lr)
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    history: list[dict[str, float]] = []
    start = 1
    last = sorted(out.glob("epoch_*.pt"))
    if cfg.resume and last:
        state = torch.load(last[-1], map_location=device, weights_only=True)
        model.load_state_dict(strip_module_prefix(state["model"]))
        opt.load_state_dict(state["optimizer"])
        history = [dict(h) for h in state["history"]]
        start = int(state["epoch"]) + 1
    trained = distributed.wrap(model, ctx)  # DDP(MethodDispatch(model)) under torchrun; shares model's parameters
    best = max(history, key=lambda h: h["val_metric"], default=None)
    gen = torch.Generator().manual_seed(cfg.seed + start)
    # one process: one generator for the permutation and the augmentation (as always); several: the
    # permutation's generator is the same on every rank, the augmentation's differs per rank
    aug_gen = gen if ctx.world_size == 1 else torch.Generator().manual_seed(
        cfg.seed + start + 1_000_003 * (ctx.rank + 1))
    started = time.monotonic()
    timed_out = False
    for epoch in range(start, cfg.epochs + 1):
        trained.train()
        order = torch.randperm(task.n_train, generator=gen).tolist()
        losses = []
        for idx in distributed.shard(order, cfg.batch_size, ctx.rank, ctx.world_size):
            batch = task.batch(idx, aug_gen)
            with amp:
                loss = task.loss(trained, batch)
            opt.zero_grad()
            try:
                (scaler.scale(loss) if scaler is not None else loss).backward()
            except RuntimeError as exc:
                if ctx.enabled and "ready only once" in str(exc):
                    raise RuntimeError(f"{cfg.model}: the task's loss runs the model more than once per step, "
                                       "which DistributedDataParallel cannot synchronise; data-parallel training "
                                       "needs one model call per step") from exc
                raise
            if scaler is not None:
                scaler.unscale_(opt)
            if task.clip_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), task.clip_norm)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            losses.append(ctx.mean_float(float(loss.detach())))  # the global batch's loss (equal shares per rank)
            if main:
                yield Event("step", epoch, train_loss=losses[-1], metric=metric)  # a GUI shows progress, can cancel
        val = ctx.broadcast_float(task.evaluate(model))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_metric": val})
        ckpt = out / f"epoch_{epoch:03d}.pt"
        improved = best is None or val > best["val_metric"]
        if improved:
            best = history[-1]
        if main:
            payload = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "history": history}
            atomic_write(ckpt, lambda tmp: torch.save(payload, tmp))
            for old in out.glob("epoch_*.pt"):  # resuming needs the last one only (weights + optimiser: large)
                if old != ckpt:
                    old.unlink(missing_ok=True)
            atomic_write(out / "history.json", lambda tmp: Path(tmp).write_text(json.dumps(
                {"model": cfg.model, "metric": metric, "base_val_metric": base_metric, "epochs": history}, indent=1)))
            if improved:
                atomic_write(out / "best.pt", lambda tmp: torch.save({"model": model.state_dict(), "epoch": epoch}, tmp))
            yield Event("epoch", epoch, train_loss=history[-1]["train_loss"], val_metric=val, metric=metric)
            yield Event("checkpoint", epoch, path=str(ckpt), metric=metric)
        if epoch - int(best["epoch"]) >= cfg.patience:
            break
        if cfg.max_minutes is not None and epoch < cfg.epochs:  # rank 0's clock decides, so all ranks stop together
            timed_out = ctx.broadcast_float(float(time.monotonic() - started > 60 * cfg.max_minutes)) > 0.5
            if timed_out:
                break

    best_metric = float(best["val_metric"]) if best else base_metric
    n_val = len(task.val_ids)
    stopped = (f" (time budget of {cfg.max_minutes:g} min reached after epoch {history[-1]['epoch']} of "
               f"{cfg.epochs})") if timed_out else ""
    if best is None or not best_metric > base_metric:
        return FinetuneResult(False, metric, base_metric, best_metric, int(best["epoch"]) if best else 0, None,
                              f"not promoted: validation {metric} {best_metric:.3f} does not beat the base model's "
                              f"{base_metric:.3f} on the same {n_val} case(s); the base stays active{stopped}", history)
    version = None
    if main:
        version = str(_promote(cfg, ctx, out, model, base, spec, task, metric, base_metric, best_metric,
                               int(best["epoch"]), synced_bn, len(history), history[-1]["epoch"] if timed_out else None))
    version = ctx.broadcast_object(version)
    return FinetuneResult(True, metric, base_metric, best_metric, int(best["epoch"]), version,
                          f"promoted {Path(version).name}: validation {metric} {best_metric:.3f} > base "
                          f"{base_metric:.3f}{stopped}", history)


def _promote(cfg: FinetuneConfig, ctx: Any, out: Path, model: torch.nn.Module, base: torch.nn.Module, spec: Any,
             task: Task, metric: str, base_metric: float, best_metric: float, best_epoch: int,
             synced_bn: bool, epochs_run: int, timed_out_after: int | None = None) -> Path:
    """Rank 0: the best epoch's weights become ``versions/vN.safetensors`` and the active version."""
    weights = torch.load(out / "best.pt", map_location=ctx.device, weights_only=True)["model"]
    model.load_state_dict(weights)
    model.cpu()
    n = len(list((out / "versions").glob("v*.safetensors"))) + 1
    version = out / "versions" / f"v{n}.safetensors"
    info = getattr(base, "checkpoint_info", None)
    base_names = ((info.manifest or {}).get("class_names") if info else None) or list(spec.class_names)
    parallel = ({"world_size": ctx.world_size, "batch_size_per_process": cfg.batch_size,
                 "global_batch_size": cfg.batch_size * ctx.world_size, "sync_batchnorm": synced_bn}
                if ctx.world_size > 1 else {})
    manifest = Manifest(
        arch=cfg.model, config=getattr(model, "config", {}), class_names=list(task.class_names or base_names),
        preprocessing={**((info.manifest or {}).get("preprocessing") or {} if info else {}), **task.preprocessing},
        trained=True, description=f"fine-tuned on {Path(cfg.dataset).name}",
        extra={"base_checkpoint": cfg.checkpoint or "untrained", "base_sha256":
               file_sha256(cfg.checkpoint) if cfg.checkpoint and Path(cfg.checkpoint).is_file() else "",
               **({"new_head": list(info.new_head)} if info is not None and info.new_head else {}),
               **task.summary(), "metric": metric, "base_val_metric": base_metric, "val_metric": best_metric,
               "epoch": best_epoch, "epochs_run": epochs_run, "epochs_planned": cfg.epochs,
               **({"time_budget": {"max_minutes": cfg.max_minutes, "stopped_after_epoch": timed_out_after}}
                  if timed_out_after is not None else {}),
               **({"distributed": parallel} if parallel else {})})
    save_checkpoint(model, version, manifest)
    _set_active(out, version)
    return version


def _checkpoint_class_names(checkpoint: str | None) -> list[str]:
    """The class names in a checkpoint's manifest (empty without a checkpoint or manifest)."""
    if not checkpoint or not str(checkpoint).endswith(".safetensors"):
        return []
    from napari_medvit.models.manifest import read_manifest

    manifest = read_manifest(checkpoint)
    return list(manifest.class_names) if manifest is not None and manifest.class_names else []


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

