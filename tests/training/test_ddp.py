"""Data-parallel fine-tuning: ``torchrun --nproc_per_node 2`` (gloo, CPU) against one process.

With world size W and ``--batch-size b`` one step consumes the W·b cases that one process takes
in a step of batch size W·b (DistributedSampler semantics, :mod:`napari_medvit.training.distributed`).
With a per-sample mean loss and no augmentation, DDP's gradient averaging then makes both runs
the same updates up to float rounding, which the first test measures on a model without
cross-sample layers: the MONAI 2D U-Net (InstanceNorm) at channels (8, 16), built with
``bias=False`` — a convolution bias right before InstanceNorm has a true gradient of exactly zero,
and Adam turns the rounding noise of such a gradient into steps of the learning rate, so with
biases those weights (and only those) drift apart by ~1e-2 although the function is the same.

Measured here (torch 2.14.1, CPU, 8 training cases of 32×32, 3 epochs, Adam lr 0.01, seed 2,
W=2/b=2 vs W=1/b=4): epoch losses differ by at most 1.5e-7 (relative 9e-8), validation Dice is
identical (0.122 / 0.114 / 0.114, both promote v1), final weights differ by at most 5.2e-7
(max |w| ≈ 0.38). Tolerances: losses relative 1e-5, Dice absolute 1e-6, weights absolute 1e-5
(≥ 19× the measured figures).

TransFuse-tiny has BatchNorm, whose statistics on CPU are per process (SyncBatchNorm has no CPU
implementation; the loop converts to it on CUDA only), so its two runs differ genuinely; the
second test checks the DDP code path of the auxiliary heads (``call(model, "forward_all")``
through ``MethodDispatch``) and bounds the difference of the loss curves (measured ≤ 1.2 %;
tolerance 10 %).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medvit.cli import main
from napari_medvit.io import ImageMeta
from napari_medvit.synthetic import generate_endoscopy_frame
from napari_medvit.training.distributed import DistContext, setup, shard
from napari_medvit.training.export import export_case

UNET = ["--model", "unet2d", "--config", "channels=[8,16]", "--config", "strides=[2]", "--config", "num_res_units=1",
        "--config", "bias=false"]
COMMON = ["--size", "32", "32", "--augment", "none", "--val-fraction", "0.2", "--patience", "10"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """10 cases: 2 for validation, 8 for training (a multiple of the global batch 4: no padding)."""
    root = tmp_path_factory.mktemp("ddp") / "Dataset002_polyps"
    for seed in range(10):
        f = generate_endoscopy_frame(seed, shape=(64, 80), n_polyps=1)
        export_case(root, f"frame-{seed}", f.image, ImageMeta.identity(2, rgb=True), f.mask,
                    label_names={"background": 0, "polyp": 1})
    return root


def torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``medvit finetune ARGS`` in 2 gloo processes; ``--standalone`` lets torchrun pick a free port itself."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "napari_medvit.cli", "finetune", *args]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def history(run: Path, epoch: int) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    state = torch.load(run / f"epoch_{epoch:03d}.pt", weights_only=True)
    return state["history"], state["model"]


def test_shard_is_distributed_sampler_semantics() -> None:
    order = [7, 3, 5, 0, 6, 1, 4, 2]
    # one process: the plain batches of the permutation
    assert shard(order, 3, 0, 1) == [[7, 3, 5], [0, 6, 1], [4, 2]]
    # two processes with b=2: step k of both ranks together is step k of one process with b=4
    r0, r1 = shard(order, 2, 0, 2), shard(order, 2, 1, 2)
    assert [sorted(a + b) for a, b in zip(r0, r1, strict=True)] == [sorted(order[0:4]), sorted(order[4:8])]
    # 5 cases on 2 ranks: padded by repeating the start, the same number of equal batches everywhere
    r0, r1 = shard([4, 2, 0, 1, 3], 2, 0, 2), shard([4, 2, 0, 1, 3], 2, 1, 2)
    assert r0 == [[4, 0], [3]] and r1 == [[2, 1], [4]]
    assert shard([9], 4, 2, 3) == [[9]]  # fewer cases than ranks: every rank still gets a batch
    with pytest.raises(ValueError, match="rank 2"):
        shard(order, 2, 2, 2)
    with pytest.raises(ValueError, match="batch_size"):
        shard(order, 0, 0, 1)


def test_without_torchrun_the_run_is_a_single_process(monkeypatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    ctx = setup(torch.device("cpu"))
    assert ctx == DistContext(device=torch.device("cpu")) and ctx.is_main and not ctx.enabled
    assert ctx.broadcast_float(0.25) == 0.25 and ctx.mean_float(3.0) == 3.0 and ctx.broadcast_object("v1") == "v1"


def test_two_gloo_processes_agree_with_one_process(dataset: Path, tmp_path: Path, capsys) -> None:
    """W=2, b=2 under torchrun vs W=1, b=4 in this process: same data, seed and updates (see the module docstring)."""
    train = [*UNET, *COMMON, "--epochs", "3", "--lr", "0.01", "--seed", "2"]
    assert main(["finetune", str(dataset), "--out", str(tmp_path / "one"), "--batch-size", "4", *train]) == 0
    single_out = capsys.readouterr().out
    proc = torchrun([str(dataset), "--out", str(tmp_path / "two"), "--batch-size", "2", *train], tmp_path)

    # only rank 0 prints: the same lines as the single process, once
    assert proc.stdout.count("epoch 3: train loss") == 1 and proc.stdout.count("base model:") == 1
    assert "promoted v1.safetensors" in single_out, "the reference run should promote (seed 2); pick another seed"
    assert proc.stdout.count("promoted v1.safetensors") == 1

    h1, w1 = history(tmp_path / "one", 3)
    h2, w2 = history(tmp_path / "two", 3)
    np.testing.assert_allclose([h["train_loss"] for h in h2], [h["train_loss"] for h in h1], rtol=1e-5)
    np.testing.assert_allclose([h["val_metric"] for h in h2], [h["val_metric"] for h in h1], rtol=0, atol=1e-6)
    assert list(w2) == list(w1) and not any(k.startswith("module.") for k in w2)  # rank 0 saves the unwrapped model
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-5

    from safetensors.torch import load_file

    v1, v2 = (load_file(tmp_path / run / "versions" / "v1.safetensors") for run in ("one", "two"))
    assert sorted(v2) == sorted(v1) and max(float((v1[k] - v2[k]).abs().max()) for k in v1) < 1e-5
    active = json.loads((tmp_path / "two" / "active.json").read_text())
    assert Path(active["active"]).name == "v1.safetensors"
    from napari_medvit.models import create_model

    promoted = create_model("unet2d", checkpoint=active["active"])  # the viewer can use it at once
    extra = promoted.checkpoint_info.manifest["extra"]
    assert extra["distributed"] == {"world_size": 2, "batch_size_per_process": 2, "global_batch_size": 4,
                                    "sync_batchnorm": False}
    assert not list((tmp_path / "two").glob(".*.tmp*"))  # no temporary files left by racing writers


def test_transfuse_trains_its_auxiliary_heads_under_ddp(dataset: Path, tmp_path: Path, capsys) -> None:
    """BatchNorm per process on CPU: close to the single run, not equal (module docstring)."""
    train = ["--model", "transfuse_tiny", *COMMON, "--epochs", "2", "--lr", "0.001"]
    assert main(["finetune", str(dataset), "--out", str(tmp_path / "one"), "--batch-size", "4", *train]) == 0
    capsys.readouterr()
    proc = torchrun([str(dataset), "--out", str(tmp_path / "two"), "--batch-size", "2", *train], tmp_path)
    assert proc.stdout.count("epoch 2: train loss") == 1

    h1, w1 = history(tmp_path / "one", 2)
    h2, w2 = history(tmp_path / "two", 2)
    assert list(w2) == list(w1)  # no "module." prefixes
    losses1, losses2 = (np.array([h["train_loss"] for h in h]) for h in (h1, h2))
    np.testing.assert_allclose(losses2, losses1, rtol=0.1)
    assert losses2[-1] < losses2[0]  # the run trains
    # every TransFuse head moved away from the base weights, in both runs alike
    from napari_medvit.models import create_model

    torch.manual_seed(0)
    base = create_model("transfuse_tiny").state_dict()
    for head in ("final_x", "final_1", "final_2"):
        keys = [k for k in w2 if k.startswith(head) and k.endswith("weight")]
        assert keys and all(not torch.equal(w2[k], base[k]) for k in keys), head


def test_smca_detr_set_loss_under_ddp_matches_one_process(tmp_path: Path, capsys) -> None:
    """SMCA-DETR's loss divides by the number of boxes of the global batch (all-reduced, as the official
    SetCriterion does), so with dropout off, frozen BatchNorm and no augmentation W=2/b=2 makes the same
    updates as W=1/b=4. Measured (2 epochs): losses agree to 1e-7 relative, weights to 1.2e-7;
    tolerances 1e-5 for both (>= 80x)."""
    from napari_medvit.training.export import export_boxes_coco

    root = tmp_path / "coco"
    for seed in range(10):
        f = generate_endoscopy_frame(seed, shape=(64, 64), n_polyps=0 if seed == 3 else 1 + seed % 2)
        export_boxes_coco(root, f"f{seed}", f.image, ImageMeta.identity(2, rgb=True), f.boxes, ["polyp"],
                          [0] * len(f.boxes))
    train = ["--model", "smca_detr_tiny", "--config", "dropout=0", "--size", "64", "64", "--augment", "none",
             "--val-fraction", "0.2", "--patience", "10", "--epochs", "2", "--seed", "1"]
    assert main(["finetune", str(root), "--out", str(tmp_path / "one"), "--batch-size", "4", *train]) == 0
    capsys.readouterr()
    proc = torchrun([str(root), "--out", str(tmp_path / "two"), "--batch-size", "2", *train], tmp_path)
    assert proc.stdout.count("epoch 2: train loss") == 1 and "AP50" in proc.stdout
    h1, w1 = history(tmp_path / "one", 2)
    h2, w2 = history(tmp_path / "two", 2)
    np.testing.assert_allclose([h["train_loss"] for h in h2], [h["train_loss"] for h in h1], rtol=1e-5)
    assert list(w2) == list(w1) and max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-5


def test_truenet_trains_its_three_plane_networks_under_ddp(tmp_path: Path) -> None:
    """TrUE-Net's step runs all three plane networks in one call (``plane_logits``), so DDP can
    synchronise it; each plane network's weights move."""
    root = tmp_path / "spheres"
    rng = np.random.default_rng(0)
    zz, yy, xx = np.indices((24, 24, 24))
    for i in range(5):
        centre = rng.integers(9, 15, size=3)
        inside = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= 16
        image = (rng.normal(100.0, 10.0, inside.shape) + 120.0 * inside).astype(np.float32)
        export_case(root, f"case-{i}", image, ImageMeta.identity(3), inside.astype(np.uint8),
                    label_names={"background": 0, "lesion": 1}, channel_names={"0": "FLAIR"})
    out = tmp_path / "run"
    proc = torchrun([str(root), "--out", str(out), "--model", "truenet", "--config", "n_channels=1", "--config",
                     "init_channels=4", "--epochs", "1", "--batch-size", "2", "--augment", "none",
                     "--val-fraction", "0.2"], tmp_path)
    assert proc.stdout.count("epoch 1: train loss") == 1
    (h,), weights = history(out, 1)
    assert np.isfinite(h["train_loss"])
    from napari_medvit.models import create_model

    torch.manual_seed(0)
    base = create_model("truenet", n_channels=1, init_channels=4).state_dict()
    for plane in ("axial", "coronal", "sagittal"):
        keys = [k for k in weights if k.startswith(plane) and k.endswith("weight") and weights[k].ndim == 4]
        assert keys and any(not torch.equal(weights[k], base[k]) for k in keys), plane
