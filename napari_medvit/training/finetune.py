"""Fine-tuning any registered model on an export folder, as a generator of events.

``finetune(cfg)`` yields :class:`Event` objects (``baseline``, ``step``, ``epoch`` with train loss
and the validation metric, ``checkpoint`` with its path) and returns a :class:`FinetuneResult`.
The task kind (see :mod:`napari_medvit.training.tasks`) follows from the model: 2D/3D
segmentation, classification (CrossViT, timm baselines, DAFT with tabular rows and its image-only 3D
ResNet) or detection
(SMCA-DETR); each brings its paper's loss, optimiser and validation metric. The steps:

1. the export folder is checked (an nnU-Net folder must agree with its ``dataset.json``: see
   :mod:`napari_medvit.training.tasks`; anything else stops with a ValueError naming the file)
   and its cases are split into training and validation with a fixed seed (``val_fraction``);
2. the base model (registry name + optional checkpoint) is scored on the validation cases first;
3. each epoch trains (mixed precision with ``precision`` "bf16"/"fp16"), scores the validation
   cases, and writes ``epoch_NNN.pt`` atomically (weights, optimiser state, history; the previous
   epoch's file is removed) so that an interrupted run resumes (``resume=True``), and ``history.json``
   (the curves: train loss and validation metric per epoch);
4. early stopping after ``patience`` epochs without improvement, or after the epoch that ends past
   ``max_minutes`` of training (a time budget; the result and the manifest say so);
5. promotion: the best epoch becomes ``versions/vN.safetensors`` (with a manifest: base checkpoint
   sha256, data summary, both metric figures, the promotion rule) and ``active.json`` points at it
   only if it beats the base on the same validation cases and there were at least
   :data:`MIN_VALIDATION_CASES` of them; otherwise the base stays active and the result says so
   with both figures (or the number of validation cases). A new version never replaces an
   existing file (N is one more than the highest). :func:`rollback` makes an earlier version
   active again.

The run folder ``out_dir`` is created only when the first epoch's checkpoint is written, so a run
refused for its inputs (the data, the model configuration, a damaged epoch checkpoint to resume
from, fp16 on a CPU) leaves no folder behind; folders it created and left empty by a failure are
removed again (only empty ones it created itself, never a pre-existing folder or any file).
Resuming (``resume=True``) reads and checks the last ``epoch_NNN.pt`` before the baseline: a
damaged or foreign one is a :class:`ResumeError` (a ValueError) naming the file and the way out.

Launched by ``torchrun --nproc_per_node N`` (e.g. ``torchrun --nproc_per_node 2 -m napari_medvit.cli
finetune ...``) the same generator runs data-parallel in every process (DistributedDataParallel; nccl
on CUDA with each process on ``cuda:LOCAL_RANK``, gloo on CPU): one step consumes ``N × batch_size``
cases, see :mod:`napari_medvit.training.distributed` for the exact semantics. Without torchrun's
environment nothing changes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medvit.inference import resolve_device
from napari_medvit.inference.predictor import autocast_dtype
from napari_medvit.io import atomic_write, finished_files
from napari_medvit.models import create_model, get_spec
from napari_medvit.models.checkpoint import Manifest, file_sha256, save_checkpoint
from napari_medvit.models.manifest import strip_module_prefix
from napari_medvit.training.tasks import Task, make_task, read_json, task_class
from napari_medvit.training.tasks import split as split  # public API

MIN_VALIDATION_CASES = 2
"""A fine-tuned version is promoted (made active) only when validated on at least this many cases: a
validation metric of a single case says too little to replace the model a user works with. Recorded
in the message of a refused run and in the manifest of a promoted version."""


class ResumeError(ValueError):
    """The epoch checkpoint to resume from cannot be used (damaged, not an epoch checkpoint, another model)."""


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
    kind: str  # "note" | "baseline" | "step" | "epoch" | "checkpoint"
    epoch: int
    train_loss: float | None = None
    val_metric: float | None = None
    metric: str = ""  # the validation metric's name, e.g. "Dice", "balanced accuracy", "AP50"
    path: str | None = None
    message: str = ""  # "note": something the user should know before training starts


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
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: not a folder; the run folder must be a folder or a path that does not exist yet")
    if out.is_dir() and Path(cfg.dataset).is_dir() and os.path.samefile(out, cfg.dataset):
        raise ValueError(f"{out}: the run folder is the export folder itself; give the run a folder of its own")
    created: list[Path] = []  # the folders this run made: removed again when a failure leaves them empty
    try:
        return (yield from _train(cfg, ctx, out, created))
    except BaseException:  # also an interrupt, or a closed generator (the viewer's cancel)
        _remove_empty(created)
        raise


def _make_folder(folder: Path, created: list[Path]) -> None:
    """``mkdir -p folder``, recording (outermost first) the folders that did not exist."""
    missing = []
    for path in (folder, *folder.parents):
        if path.is_dir():
            break
        missing.append(path)
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        created.append(path)


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders of ``created`` that are still empty (innermost first; never a file, never a folder
    that held anything)."""
    for path in reversed(created):
        try:
            path.rmdir()  # only an empty folder
        except OSError:
            break


def _read_resume_state(out: Path, model: torch.nn.Module, device: torch.device) -> tuple[Path, dict[str, Any]] | None:
    """The last epoch checkpoint of ``out`` (path, state), checked against ``model``; None without one."""
    files = finished_files(out, "epoch_*.pt")
    if not files:
        return None
    path = files[-1]
    versions = sorted(finished_files(out / "versions", "v*.safetensors"), key=lambda p: _version_number(p))

    def fail(problem: str) -> ResumeError:
        if len(files) > 1:
            way = f"the earlier {files[-2].name} is still there: move {path.name} away to resume from it"
        else:
            way = "no other epoch checkpoint is left (a run keeps the last one only): start the run afresh"
            if versions:
                way += f", e.g. from its latest version {versions[-1].relative_to(out)} as the base checkpoint"
        return ResumeError(f"{path}: cannot resume from this epoch checkpoint: {problem}; {way}")

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated or damaged file: zip, pickle or EOF errors, whichever torch meets
        raise fail(f"it is damaged or not a checkpoint ({type(exc).__name__}: {exc})") from exc
    keys = ("model", "optimizer", "epoch", "history")
    if not isinstance(state, dict) or any(k not in state for k in keys):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise fail(f"it is not an epoch checkpoint of a fine-tuning run (expected {list(keys)}, found {found})")
    history = state["history"]
    if not (isinstance(state["epoch"], int) and isinstance(history, list) and all(
            isinstance(h, dict) and {"epoch", "train_loss", "val_metric"} <= set(h) for h in history)):
        raise fail("its epoch number or history is malformed")
    weights, own = strip_module_prefix(state["model"]), model.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    shapes = [k for k in set(own) & set(weights) if tuple(own[k].shape) != tuple(weights[k].shape)]
    if missing or unexpected or shapes:
        detail = "; ".join(f"{what}: {', '.join(sorted(ks)[:3])}{' ...' if len(ks) > 3 else ''}" for what, ks in
                           (("missing", missing), ("unexpected", unexpected), ("other shapes", shapes)) if ks)
        raise fail(f"its weights do not fit this model ({detail}); resume with the run's own model and configuration")
    if history and not (out / "best.pt").is_file():
        raise fail("the run's best.pt (the best epoch's weights, needed to promote) is missing")
    return path, state


def _version_number(path: Path) -> int:
    digits = path.stem[1:]
    return int(digits) if digits.isdigit() else 0


@dataclass
class _Run:
    """The state of one fine-tuning run, shared by its steps."""

    cfg: FinetuneConfig
    ctx: Any
    out: Path
    created: list[Path]
    base: torch.nn.Module
    task: Task
    synced_bn: bool
    opt: Any = None
    scaler: Any = None
    amp: Any = None
    base_metric: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None
    timed_out: bool = False


def _train(cfg: FinetuneConfig, ctx: Any, out: Path, created: list[Path]) -> Generator[Event, None, FinetuneResult]:
    """The steps of a run: build and check, baseline, epochs, promotion (see the module docstring)."""
    from napari_medvit.training import distributed

    torch.manual_seed(cfg.seed)
    base, synced_bn, task = _build(cfg, ctx)
    run = _Run(cfg, ctx, out, created, base, task, synced_bn)
    note = _few_validation_note(cfg, task)
    run.amp = _autocast(ctx.device, cfg.precision)  # checked before the (slow) baseline
    resume = _read_resume_state(out, base, ctx.device) if cfg.resume else None  # also before the baseline
    if note is not None and ctx.is_main:
        yield note  # after the checks that stop a run, before any training
    run.base_metric = ctx.broadcast_float(task.evaluate(base))
    if ctx.is_main:
        yield Event("baseline", 0, val_metric=run.base_metric, metric=task.metric)
    run.opt = task.optimizer(base.parameters(), cfg.lr or task.default_lr)
    run.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    start = _restore(run, resume)
    trained = distributed.wrap(base, ctx)  # DDP(MethodDispatch(model)) under torchrun; shares model's parameters
    run.best = max(run.history, key=lambda h: h["val_metric"], default=None)
    gen = torch.Generator().manual_seed(cfg.seed + start)
    # one process: one generator for the permutation and the augmentation (as always); several: the
    # permutation's generator is the same on every rank, the augmentation's differs per rank
    aug_gen = gen if ctx.world_size == 1 else torch.Generator().manual_seed(
        cfg.seed + start + 1_000_003 * (ctx.rank + 1))
    started = time.monotonic()
    for epoch in range(start, cfg.epochs + 1):
        loss = yield from _epoch(run, trained, epoch, gen, aug_gen)
        yield from _finish_epoch(run, epoch, loss)
        if epoch - int(run.best["epoch"]) >= cfg.patience:  # type: ignore[index]
            break
        if cfg.max_minutes is not None and epoch < cfg.epochs:  # rank 0's clock decides, so all ranks stop together
            run.timed_out = ctx.broadcast_float(float(time.monotonic() - started > 60 * cfg.max_minutes)) > 0.5
            if run.timed_out:
                break
    return _outcome(run, too_few=note is not None)


def _build(cfg: FinetuneConfig, ctx: Any) -> tuple[torch.nn.Module, bool, Task]:
    """The base model (a new class head when the checkpoint's classes are not the data's) and the task."""
    from napari_medvit.models.config import resolve_checkpoint
    from napari_medvit.training import distributed

    spec = get_spec(cfg.model)
    base_names = list(resolve_checkpoint(cfg.model, cfg.checkpoint).class_names)
    data_overrides = task_class(spec).model_overrides(cfg.dataset, spec, base_names)
    # a checkpoint whose head has other classes than the data's: keep the rest, start a new head
    new_head = bool(cfg.checkpoint) and bool(data_overrides)
    base = create_model(cfg.model, checkpoint=cfg.checkpoint, new_head=new_head,
                        **{**data_overrides, **cfg.config_overrides}).to(ctx.device)
    base, synced_bn = distributed.sync_batchnorm(base, ctx)
    task: Task = make_task(cfg.dataset, base, ctx.device, val_fraction=cfg.val_fraction, seed=cfg.seed,
                           size=tuple(cfg.size) if cfg.size else None, augment=cfg.augment)
    if task.n_train == 0:
        raise ValueError(f"val_fraction {cfg.val_fraction} leaves no training cases")
    return base, synced_bn, task


def _few_validation_note(cfg: FinetuneConfig, task: Task) -> Event | None:
    """The note that the run cannot be promoted (too few validation cases), with the fraction that would do."""
    n_cases = task.n_train + len(task.val_ids)
    if len(task.val_ids) >= MIN_VALIDATION_CASES:
        return None
    fraction = math.ceil(100 * (MIN_VALIDATION_CASES - 0.5) / n_cases) / 100
    while int(round(n_cases * fraction)) < MIN_VALIDATION_CASES:  # the split rounds half to even
        fraction += 0.01
    hint = (f"raise the validation fraction to {fraction:.2f} or export more cases"
            if n_cases > MIN_VALIDATION_CASES else "export more cases")
    return Event("note", 0, message=(
        f"val_fraction {cfg.val_fraction} leaves {len(task.val_ids)} of {n_cases} case(s) for validation: the "
        f"result will be trained but cannot become active (a promotion needs at least {MIN_VALIDATION_CASES}, "
        f"MIN_VALIDATION_CASES); {hint}"))


def _restore(run: _Run, resume: tuple[Path, dict[str, Any]] | None) -> int:
    """Weights, optimiser state and history of the epoch checkpoint to resume from; the first epoch to run."""
    if resume is None:
        return 1
    path, state = resume
    try:
        run.base.load_state_dict(strip_module_prefix(state["model"]))
        run.opt.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise ResumeError(f"{path}: cannot resume from this epoch checkpoint: its weights or optimiser state do "
                          f"not fit this run ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
                          "resume with the run's own model, configuration and settings, or start afresh") from exc
    run.history = [dict(h) for h in state["history"]]
    return int(state["epoch"]) + 1


def _epoch(run: _Run, trained: torch.nn.Module, epoch: int, gen: torch.Generator,
           aug_gen: torch.Generator) -> Generator[Event, None, float]:
    """One epoch of training steps (a ``step`` event each, so a GUI shows progress and can cancel); the mean loss."""
    from napari_medvit.training import distributed

    cfg, ctx, task = run.cfg, run.ctx, run.task
    trained.train()
    order = torch.randperm(task.n_train, generator=gen).tolist()
    losses = []
    for idx in distributed.shard(order, cfg.batch_size, ctx.rank, ctx.world_size):
        batch = task.batch(idx, aug_gen)
        with run.amp:
            loss = task.loss(trained, batch)
        _step(run, loss)
        losses.append(ctx.mean_float(float(loss.detach())))  # the global batch's loss (equal shares per rank)
        if ctx.is_main:
            yield Event("step", epoch, train_loss=losses[-1], metric=task.metric)
    return float(np.mean(losses))


def _step(run: _Run, loss: torch.Tensor) -> None:
    """Backward (scaled for fp16), gradient clipping at the task's norm, optimiser step."""
    opt, scaler = run.opt, run.scaler
    opt.zero_grad()
    try:
        (scaler.scale(loss) if scaler is not None else loss).backward()
    except RuntimeError as exc:
        if run.ctx.enabled and "ready only once" in str(exc):
            raise RuntimeError(f"{run.cfg.model}: the task's loss runs the model more than once per step, "
                               "which DistributedDataParallel cannot synchronise; data-parallel training "
                               "needs one model call per step") from exc
        raise
    if scaler is not None:
        scaler.unscale_(opt)
    if run.task.clip_norm:
        torch.nn.utils.clip_grad_norm_(run.base.parameters(), run.task.clip_norm)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()


def _finish_epoch(run: _Run, epoch: int, loss: float) -> Generator[Event, None, None]:
    """Score the epoch on the validation cases; rank 0 writes the epoch checkpoint, history.json, best.pt."""
    val = run.ctx.broadcast_float(run.task.evaluate(run.base))
    run.history.append({"epoch": epoch, "train_loss": loss, "val_metric": val})
    improved = run.best is None or val > run.best["val_metric"]
    if improved:
        run.best = run.history[-1]
    if not run.ctx.is_main:
        return
    out, model, metric = run.out, run.base, run.task.metric
    ckpt = out / f"epoch_{epoch:03d}.pt"
    _make_folder(out, run.created)  # only now: a run refused for its inputs leaves no folder behind
    payload = {"model": model.state_dict(), "optimizer": run.opt.state_dict(), "epoch": epoch, "history": run.history}
    atomic_write(ckpt, lambda tmp: torch.save(payload, tmp))
    for old in out.glob("epoch_*.pt"):  # resuming needs the last one only (weights + optimiser: large)
        if old != ckpt:
            old.unlink(missing_ok=True)
    atomic_write(out / "history.json", lambda tmp: Path(tmp).write_text(json.dumps(
        {"model": run.cfg.model, "metric": metric, "base_val_metric": run.base_metric,
         "val_cases": len(run.task.val_ids), "min_validation_cases": MIN_VALIDATION_CASES, "epochs": run.history},
        indent=1)))
    if improved:
        atomic_write(out / "best.pt", lambda tmp: torch.save({"model": model.state_dict(), "epoch": epoch}, tmp))
    yield Event("epoch", epoch, train_loss=loss, val_metric=val, metric=metric)
    yield Event("checkpoint", epoch, path=str(ckpt), metric=metric)


def _outcome(run: _Run, *, too_few: bool) -> FinetuneResult:
    """Promote the best epoch if it beats the base on enough validation cases; the result says which and why."""
    cfg, metric, base_metric, best, history = run.cfg, run.task.metric, run.base_metric, run.best, run.history
    best_metric = float(best["val_metric"]) if best else base_metric
    best_epoch = int(best["epoch"]) if best else 0
    n_val = len(run.task.val_ids)
    stopped = (f" (time budget of {cfg.max_minutes:g} min reached after epoch {history[-1]['epoch']} of "
               f"{cfg.epochs})") if run.timed_out else ""
    if too_few:
        return FinetuneResult(False, metric, base_metric, best_metric, best_epoch, None,
                              f"not promoted: validated on {n_val} case(s), fewer than the {MIN_VALIDATION_CASES} "
                              f"a promotion needs (MIN_VALIDATION_CASES); validation {metric} {best_metric:.3f}, "
                              f"base {base_metric:.3f}; export more cases or raise val_fraction; the base stays "
                              f"active{stopped}", history)
    if best is None or not best_metric > base_metric:
        return FinetuneResult(False, metric, base_metric, best_metric, best_epoch, None,
                              f"not promoted: validation {metric} {best_metric:.3f} does not beat the base model's "
                              f"{base_metric:.3f} on the same {n_val} case(s); the base stays active{stopped}", history)
    version = None
    if run.ctx.is_main:
        version = str(_promote(run, best_metric, best_epoch, int(history[-1]["epoch"]) if run.timed_out else None))
    version = run.ctx.broadcast_object(version)
    return FinetuneResult(True, metric, base_metric, best_metric, best_epoch, version,
                          f"promoted {Path(version).name}: validation {metric} {best_metric:.3f} > base "
                          f"{base_metric:.3f}{stopped}", history)


def _promote(run: _Run, best_metric: float, best_epoch: int, timed_out_after: int | None = None) -> Path:
    """Rank 0: the best epoch's weights become ``versions/vN.safetensors`` and the active version."""
    ctx, out, model = run.ctx, run.out, run.base
    try:
        weights = torch.load(out / "best.pt", map_location=ctx.device, weights_only=True)["model"]
        model.load_state_dict(weights)
    except Exception as exc:
        raise ValueError(f"{out / 'best.pt'}: cannot read the best epoch's weights to promote them "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from exc
    model.cpu()
    (out / "versions").mkdir(exist_ok=True)
    existing = finished_files(out / "versions", "v*.safetensors")
    n = max((_version_number(p) for p in existing), default=0) + 1  # never the name of an existing file
    version = out / "versions" / f"v{n}.safetensors"
    save_checkpoint(model, version, _version_manifest(run, best_metric, best_epoch, timed_out_after))
    _set_active(out, version)
    return version


def _version_manifest(run: _Run, best_metric: float, best_epoch: int, timed_out_after: int | None) -> Manifest:
    """What a promoted version records: the base's configuration and class names (or the data's), the base
    checkpoint's own preprocessing with what the data adds, the data summary and both metric figures."""
    cfg, ctx, task = run.cfg, run.ctx, run.task
    config = task.config  # the base model's resolved configuration
    info = getattr(run.base, "checkpoint_info", None)
    parallel = ({"world_size": ctx.world_size, "batch_size_per_process": cfg.batch_size,
                 "global_batch_size": cfg.batch_size * ctx.world_size, "sync_batchnorm": run.synced_bn}
                if ctx.world_size > 1 else {})
    return Manifest(
        arch=cfg.model, config=getattr(run.base, "config", {}),
        class_names=list(task.class_names or config.class_names or config.spec.class_names),
        preprocessing={**config.checkpoint_preprocessing, **task.preprocessing},
        trained=True, description=f"fine-tuned on {Path(cfg.dataset).name}",
        extra={"base_checkpoint": cfg.checkpoint or "untrained", "base_sha256":
               file_sha256(cfg.checkpoint) if cfg.checkpoint and Path(cfg.checkpoint).is_file() else "",
               **({"new_head": list(info.new_head)} if info is not None and info.new_head else {}),
               **task.summary(), "metric": task.metric, "base_val_metric": run.base_metric, "val_metric": best_metric,
               "epoch": best_epoch, "epochs_run": len(run.history), "epochs_planned": cfg.epochs,
               "promotion": {"min_validation_cases": MIN_VALIDATION_CASES, "validation_cases": len(task.val_ids)},
               **({"time_budget": {"max_minutes": cfg.max_minutes, "stopped_after_epoch": timed_out_after}}
                  if timed_out_after is not None else {}),
               **({"distributed": parallel} if parallel else {})})


def _set_active(out: Path, version: Path) -> None:
    record = {"active": str(version), "sha256": file_sha256(version)}
    atomic_write(out / "active.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))


def active_checkpoint(out_dir: str | Path) -> str | None:
    path = Path(out_dir) / "active.json"
    if not path.is_file():
        return None
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("active"), str):
        raise ValueError(f"{path}: expected {{\"active\": <version file>, ...}}, the record a promotion writes")
    return record["active"]


def rollback(out_dir: str | Path, version: str) -> str:
    """Make an earlier version (e.g. ``"v1"``) active again; returns its path."""
    target = Path(out_dir) / "versions" / f"{version}.safetensors"
    if not target.is_file():
        available = sorted(p.stem for p in (Path(out_dir) / "versions").glob("v*.safetensors"))
        raise ValueError(f"no version {version!r} in {out_dir}; available: {available}")
    _set_active(Path(out_dir), target)
    return str(target)

