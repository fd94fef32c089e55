"""Data-parallel fine-tuning under ``torchrun``: process group, sharding and rank-0 decisions.

``torchrun --nproc_per_node N -m napari_medvit.cli finetune EXPORT --out RUN ...`` starts N
processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in
their environment. :func:`setup` reads them, initialises the default process group (``nccl`` when
training on CUDA, each process on ``cuda:LOCAL_RANK``; ``gloo`` otherwise) and returns a
:class:`DistContext`; without that environment it returns a single-process context and nothing
changes. The fine-tuning loop then wraps the model as ``DistributedDataParallel(MethodDispatch(model))``
(see :mod:`napari_medvit.training.tasks`), so gradients are averaged over the processes.

Batch semantics are those of ``torch.utils.data.DistributedSampler``: every process draws the same
seeded permutation of the training cases each epoch, the permutation is padded (by repeating its
start) to a multiple of the world size W, and process r takes every W-th case starting at r; each
process then batches its share with ``batch_size``. One optimisation step therefore consumes
``W × batch_size`` cases, and step k of all processes together covers exactly the cases of step k
of a single process run with ``batch_size × W`` (when the number of training cases is a multiple of
W, otherwise the padding repeats a few). With a loss that is a per-sample mean, DDP's gradient
averaging makes both runs the same update up to float rounding, except for layers that look at the
whole batch: BatchNorm statistics are per process unless converted to SyncBatchNorm, which the loop
does on CUDA (SyncBatchNorm has no CPU implementation, so CPU/gloo runs normalise per process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True when the process environment holds torchrun's rank variables."""
    return all(k in os.environ for k in _ENV)


def env_rank() -> int:
    """This process's global rank from torchrun's environment (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    enabled: bool = False  # a process group is in use (launched by torchrun, or initialised by the caller)
    owns_group: bool = False  # this context initialised the group and destroys it in shutdown()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (no-ops in a single process) ------------------------------------------------
    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                torch.distributed.barrier(device_ids=[self.device.index or 0])
            else:
                torch.distributed.barrier()

    def broadcast_float(self, value: float) -> float:
        """Rank 0's ``value`` on every process."""
        if not self.enabled:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        torch.distributed.broadcast(t, src=0)
        return float(t.item())

    def mean_float(self, value: float) -> float:
        """The mean of ``value`` over the processes."""
        if not self.enabled:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return float(t.item()) / self.world_size

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's (picklable) ``obj`` on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def shutdown(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.owns_group = False


def setup(device: torch.device) -> DistContext:
    """The process's :class:`DistContext` for training on ``device`` (see the module docstring).

    Launched by torchrun, this initialises the default process group unless the caller already
    did (then it is used and left alone); on CUDA the device becomes ``cuda:LOCAL_RANK``. Otherwise
    a single-process context on ``device``.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # the caller's own process group
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank if device.type == "cuda" else 0))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        return DistContext(rank, world, local, device, enabled=True, owns_group=False)
    if not launched_by_torchrun():
        return DistContext(device=device)
    if not dist.is_available():
        raise ValueError("launched by torchrun, but this torch build has no torch.distributed support")
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s): start at most "
                             f"{torch.cuda.device_count()} process(es) per node (torchrun --nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")
    return DistContext(rank, world, local, device, enabled=True, owns_group=True)


def shard(order: list[int], batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """This rank's batches of one epoch's permutation ``order`` (DistributedSampler semantics).

    ``order`` is padded by repeating its start to a multiple of ``world_size``; the rank takes
    ``order[rank::world_size]`` and cuts it into batches of ``batch_size`` (the last may be
    smaller). All ranks get the same number of batches of the same sizes, and batch k of all ranks
    together is ``order[k·W·b:(k+1)·W·b]`` of the padded order. ``world_size`` 1 gives the plain
    batches of ``order``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world size {world_size})")
    padded = list(order)
    if padded and len(padded) % world_size:
        need = world_size - len(padded) % world_size
        padded += (padded * (need // len(padded) + 1))[:need]
    mine = padded[rank::world_size]
    return [mine[b:b + batch_size] for b in range(0, len(mine), batch_size)]


def wrap(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """The module to train: ``model`` itself in one process, else ``DDP(MethodDispatch(model))``.

    ``find_unused_parameters`` is on because several models hold parameters that a training
    forward does not use (e.g. TransFuse's class token); parameters stay shared with ``model``,
    which the loop keeps using for evaluation and state dicts (keys without ``module.``).
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    from napari_medvit.training.tasks import MethodDispatch

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(MethodDispatch(model), device_ids=ids, output_device=ids[0] if ids else None,
                                   find_unused_parameters=True)


def sync_batchnorm(model: torch.nn.Module, ctx: DistContext) -> tuple[torch.nn.Module, bool]:
    """BatchNorm layers as SyncBatchNorm when several CUDA processes train (statistics over the global batch)."""
    if not (ctx.enabled and ctx.world_size > 1 and ctx.device.type == "cuda"):
        return model, False
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if not has_bn:
        return model, False
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # copied only when the root itself was replaced
    for attr in ("medvit_spec", "medvit_config", "checkpoint_info", "config"):
        if hasattr(model, attr) and not hasattr(converted, attr):
            setattr(converted, attr, getattr(model, attr))
    return converted, True
