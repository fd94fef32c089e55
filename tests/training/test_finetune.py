from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medvit.io import ImageMeta
from napari_medvit.synthetic import generate_endoscopy_frame
from napari_medvit.training.export import export_case
from napari_medvit.training.finetune import (
    MIN_VALIDATION_CASES,
    FinetuneConfig,
    ResumeError,
    active_checkpoint,
    finetune,
    rollback,
    split,
)
from napari_medvit.training.seg2d import structure_loss


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export") / "Dataset001_polyps"
    for seed in range(6):
        f = generate_endoscopy_frame(seed, shape=(96, 128), n_polyps=1)
        export_case(root, f"frame-{seed}", f.image, ImageMeta.identity(2, rgb=True), f.mask,
                    label_names={"background": 0, "polyp": 1})
    return root


def run(cfg: FinetuneConfig):
    gen = finetune(cfg)
    events = []
    while True:
        try:
            event = next(gen)
            if event.kind != "step":
                events.append(event)
        except StopIteration as stop:
            return events, stop.value


def test_split_is_fixed_by_the_seed() -> None:
    ids = [f"c{i}" for i in range(10)]
    assert split(ids, 0.3, 1) == split(ids, 0.3, 1)
    train, val = split(ids, 0.3, 1)
    assert len(val) == 3 and not set(train) & set(val)


def test_structure_loss_is_small_for_a_perfect_prediction() -> None:
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:20, 8:20] = 1
    good, bad = structure_loss(mask * 40 - 20, mask), structure_loss(20 - mask * 40, mask)
    assert float(good) < 0.01 < 1.0 < float(bad)


def scripted_scores(monkeypatch, scores: list[float]) -> None:
    """Validation Dice figures in call order: the baseline first, then one per epoch."""
    from napari_medvit.training.seg2d import Segment2DTask

    it = iter(scores)
    monkeypatch.setattr(Segment2DTask, "evaluate", lambda *a, **k: next(it))


def test_finetune_events_checkpoints_promotion_and_rollback(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    scripted_scores(monkeypatch, [0.20, 0.35, 0.50])
    out = tmp_path / "run"
    cfg = FinetuneConfig(dataset=str(dataset), out_dir=str(out), model="transfuse_tiny", epochs=2,
                         lr=1e-3, batch_size=2, size=(64, 64), seed=0)
    events, result = run(cfg)
    assert [e.kind for e in events] == ["baseline", "epoch", "checkpoint", "epoch", "checkpoint"]
    assert [e.val_metric for e in events if e.kind != "checkpoint"] == [0.20, 0.35, 0.50]
    assert (out / "epoch_002.pt").is_file() and all(np.isfinite(h["train_loss"]) for h in result.history)
    assert not (out / "epoch_001.pt").exists()  # only the last epoch's (large) resume file is kept
    curves = json.loads((out / "history.json").read_text())
    assert curves["metric"] == "Dice" and [h["val_metric"] for h in curves["epochs"]] == [0.35, 0.50]
    assert result.promoted and result.best_epoch == 2 and result.version.endswith("v1.safetensors")
    assert active_checkpoint(out) == result.version
    from napari_medvit.models import create_model

    promoted = create_model("transfuse_tiny", checkpoint=result.version)  # usable at once by the viewer
    extra = promoted.checkpoint_info.manifest["extra"]
    assert extra["base_val_metric"] == 0.20 and extra["val_metric"] == 0.50 and len(extra["val_cases"]) == 2
    assert extra["promotion"] == {"min_validation_cases": MIN_VALIDATION_CASES, "validation_cases": 2}

    scripted_scores(monkeypatch, [0.20, 0.60])  # a second run promotes v2; rolling back makes v1 active again
    cfg.epochs, cfg.resume = 3, True
    _, second = run(cfg)
    assert second.version.endswith("v2.safetensors") and active_checkpoint(out) == second.version
    assert rollback(out, "v1") == result.version and active_checkpoint(out) == result.version


def test_resume_continues_after_the_last_epoch(dataset: Path, tmp_path: Path) -> None:
    cfg = FinetuneConfig(dataset=str(dataset), out_dir=str(tmp_path / "r"), model="transfuse_tiny", epochs=1,
                         batch_size=3, size=(64, 64))
    run(cfg)
    cfg.epochs, cfg.resume = 2, True
    events, result = run(cfg)
    assert [e.epoch for e in events if e.kind == "epoch"] == [2]
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_promotion_refused_when_validation_gets_worse(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    scripted_scores(monkeypatch, [0.80, 0.40, 0.30])
    cfg = FinetuneConfig(dataset=str(dataset), out_dir=str(tmp_path / "w"), model="transfuse_tiny", epochs=2,
                         size=(64, 64), augment="none")
    _, result = run(cfg)
    assert not result.promoted and result.version is None
    assert result.message == ("not promoted: validation Dice 0.400 does not beat the base model's 0.800 on the same "
                              "2 case(s); the base stays active")
    assert active_checkpoint(tmp_path / "w") is None
    assert not list((tmp_path / "w" / "versions").glob("*.safetensors"))
    with pytest.raises(ValueError, match="no version 'v9'"):
        rollback(tmp_path / "w", "v9")


def test_early_stopping(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    scripted_scores(monkeypatch, [0.1, 0.5, 0.4, 0.4, 0.4, 0.9])
    cfg = FinetuneConfig(dataset=str(dataset), out_dir=str(tmp_path / "e"), model="transfuse_tiny", epochs=5,
                         size=(64, 64), patience=2)
    events, result = run(cfg)
    assert [e.epoch for e in events if e.kind == "epoch"] == [1, 2, 3] and result.best_epoch == 1


def test_bad_export_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no dataset.json"):
        run(FinetuneConfig(dataset=str(tmp_path), out_dir=str(tmp_path / "o"), model="transfuse_tiny"))


def test_the_unet_baseline_fine_tunes_with_dice_ce(dataset: Path, tmp_path: Path) -> None:
    cfg = FinetuneConfig(dataset=str(dataset), out_dir=str(tmp_path / "u"), model="unet2d", epochs=2, lr=1e-3,
                         batch_size=2, size=(64, 64), augment="standard",
                         config_overrides={"channels": [8, 16, 32], "strides": [2, 2]})
    events, result = run(cfg)
    assert [e.metric for e in events if e.kind == "epoch"] == ["Dice", "Dice"]
    assert all(np.isfinite(h["train_loss"]) for h in result.history) and 0 <= result.best_metric <= 1


def test_fp16_on_cpu_is_refused_before_training(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fp16 trains on CUDA only"):
        run(FinetuneConfig(dataset=str(dataset), out_dir=str(tmp_path / "h"), model="transfuse_tiny",
                           precision="fp16", size=(64, 64)))


def test_bf16_autocast_trains_on_cpu(dataset: Path, tmp_path: Path) -> None:
    cfg = FinetuneConfig(dataset=str(dataset), out_dir=str(tmp_path / "b"), model="transfuse_tiny", epochs=1,
                         batch_size=2, size=(64, 64), precision="bf16")
    _, result = run(cfg)
    assert np.isfinite(result.history[0]["train_loss"])


def test_a_version_keeps_the_base_checkpoints_preprocessing(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    from napari_medvit.models import create_model
    from napari_medvit.models.checkpoint import Manifest, save_checkpoint

    base = create_model("transfuse_tiny")
    pre = {"resize": [64, 64], "threshold": 0.4}
    save_checkpoint(base, tmp_path / "base.safetensors", Manifest(arch="transfuse_tiny", config=base.config,
                    class_names=["background", "polyp"], preprocessing=pre, trained=True))
    scripted_scores(monkeypatch, [0.1, 0.2])
    _, result = run(FinetuneConfig(dataset=str(dataset), out_dir=str(tmp_path / "p"), model="transfuse_tiny",
                                   checkpoint=str(tmp_path / "base.safetensors"), epochs=1, size=(64, 64)))
    manifest = create_model("transfuse_tiny", checkpoint=result.version).checkpoint_info.manifest
    assert manifest["preprocessing"] == pre and manifest["class_names"] == ["background", "polyp"]
    assert len(manifest["extra"]["base_sha256"]) == 64


def test_time_budget_stops_after_the_epoch_that_ends_past_it(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    scripted_scores(monkeypatch, [0.20, 0.35, 0.50, 0.60])
    out = tmp_path / "run"
    cfg = FinetuneConfig(dataset=str(dataset), out_dir=str(out), model="transfuse_tiny", epochs=3,
                         batch_size=2, size=(64, 64), seed=0, max_minutes=1e-6)
    events, result = run(cfg)
    assert [e.epoch for e in events if e.kind == "epoch"] == [1]
    assert result.promoted and "time budget of 1e-06 min reached after epoch 1 of 3" in result.message
    from napari_medvit.models.manifest import read_manifest

    extra = read_manifest(result.version).extra
    assert extra["time_budget"] == {"max_minutes": 1e-6, "stopped_after_epoch": 1}
    assert (extra["epochs_run"], extra["epochs_planned"]) == (1, 3)
    with pytest.raises(ValueError, match="max_minutes"):
        run(FinetuneConfig(dataset=str(dataset), out_dir=str(tmp_path / "r2"), model="transfuse_tiny",
                           size=(64, 64), max_minutes=0))


def test_promotion_needs_the_minimum_number_of_validation_cases(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    assert MIN_VALIDATION_CASES == 2
    scripted_scores(monkeypatch, [0.10, 0.90])  # a large gain, measured on a single case
    out = tmp_path / "few"
    cfg = FinetuneConfig(dataset=str(dataset), out_dir=str(out), model="transfuse_tiny", epochs=1, size=(64, 64),
                         val_fraction=0.1)  # 6 cases: 1 for validation
    events, result = run(cfg)
    assert events[0].kind == "note"  # said before the baseline, i.e. before any training
    assert ("leaves 1 of 6 case(s) for validation" in events[0].message
            and "raise the validation fraction to 0.25" in events[0].message)
    assert not result.promoted and result.version is None and result.best_metric == 0.90
    assert "validated on 1 case(s), fewer than the 2 a promotion needs (MIN_VALIDATION_CASES)" in result.message
    assert active_checkpoint(out) is None and not (out / "versions").exists()
    curves = json.loads((out / "history.json").read_text())
    assert (curves["val_cases"], curves["min_validation_cases"]) == (1, MIN_VALIDATION_CASES)
    scripted_scores(monkeypatch, [0.10, 0.90])
    cfg.val_fraction, cfg.out_dir = 0.25, str(tmp_path / "enough")  # the fraction the note proposes
    events, result = run(cfg)
    assert result.promoted and all(e.kind != "note" for e in events)


def test_a_refused_run_leaves_no_run_folder_and_keeps_an_existing_one(dataset: Path, tmp_path: Path) -> None:
    nested = tmp_path / "runs" / "today"
    with pytest.raises(ValueError, match="fp16 trains on CUDA only"):
        run(FinetuneConfig(dataset=str(dataset), out_dir=str(nested), model="transfuse_tiny", precision="fp16",
                           size=(64, 64)))
    assert not (tmp_path / "runs").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(ValueError, match="no dataset.json"):
        run(FinetuneConfig(dataset=str(tmp_path / "nothing"), out_dir=str(mine), model="transfuse_tiny"))
    assert mine.is_dir() and not list(mine.iterdir())


def test_a_damaged_epoch_checkpoint_is_named_with_the_epoch_to_use_instead(dataset: Path, tmp_path: Path,
                                                                           monkeypatch) -> None:
    scripted_scores(monkeypatch, [0.1, 0.2])
    out = tmp_path / "r"
    cfg = FinetuneConfig(dataset=str(dataset), out_dir=str(out), model="transfuse_tiny", epochs=1, batch_size=3,
                         size=(64, 64))
    run(cfg)
    good = (out / "epoch_001.pt").read_bytes()
    (out / "epoch_002.pt").write_bytes(good[: len(good) // 2])  # a copy cut short: the newest file is damaged
    cfg.epochs, cfg.resume = 3, True
    with pytest.raises(ResumeError,
                       match=r"epoch_002\.pt: cannot resume.*damaged.*earlier epoch_001\.pt is still there"):
        run(cfg)
    (out / "epoch_002.pt").unlink()
    (out / "epoch_001.pt").write_bytes(good[:100])
    with pytest.raises(ResumeError, match=r"epoch_001\.pt.*no other epoch checkpoint.*versions/v1\.safetensors"):
        run(cfg)
    with pytest.raises(ResumeError, match="do not fit this model"):
        (out / "epoch_001.pt").write_bytes(good)
        run(FinetuneConfig(dataset=str(dataset), out_dir=str(out), model="unet2d", epochs=2, size=(64, 64),
                           resume=True, config_overrides={"channels": [8, 16], "strides": [2]}))


def test_a_new_version_never_replaces_an_existing_file(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    scripted_scores(monkeypatch, [0.1, 0.2])
    out = tmp_path / "v"
    cfg = FinetuneConfig(dataset=str(dataset), out_dir=str(out), model="transfuse_tiny", epochs=1, batch_size=3,
                         size=(64, 64))
    _, first = run(cfg)
    assert first.version.endswith("v1.safetensors")
    (out / "versions" / "v3.safetensors").write_bytes(b"a version the user keeps")  # v2 deleted, v3 kept
    scripted_scores(monkeypatch, [0.1, 0.3])
    cfg.epochs, cfg.resume = 2, True
    _, second = run(cfg)
    assert second.version.endswith("v4.safetensors") and active_checkpoint(out) == second.version
    assert (out / "versions" / "v3.safetensors").read_bytes() == b"a version the user keeps"
