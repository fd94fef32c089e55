from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medvit.io import ImageMeta
from napari_medvit.models import create_model, get_spec
from napari_medvit.synthetic import generate_endoscopy_frame
from napari_medvit.training.classify import ClassifyTask, accuracy, balanced_accuracy, class_names_for
from napari_medvit.training.export import export_class_label
from napari_medvit.training.finetune import FinetuneConfig, finetune
from napari_medvit.training.tasks import split
from napari_medvit.transforms import tabular_vector
from napari_medvit.transforms.augment import augment_3d


def run(cfg: FinetuneConfig):
    gen = finetune(cfg)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """12 frames: "bright" (as rendered) and "dark" (the same kind of frame at 30% brightness)."""
    root = tmp_path_factory.mktemp("export") / "classes"
    for seed in range(12):
        image = generate_endoscopy_frame(seed, shape=(72, 96)).image
        label = "bright" if seed % 2 else "dark"
        if label == "dark":
            image = (image * 0.3).astype(np.uint8)
        export_class_label(root, f"frame-{seed}", label, image=image, meta=ImageMeta.identity(2, rgb=True))
    return root


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    """6 small random volumes with DAFT rows, some values missing (empty cells)."""
    root = tmp_path_factory.mktemp("export") / "daft"
    rng = np.random.default_rng(0)
    for i in range(6):
        label = ("CN", "Dementia")[i % 2]
        vol = rng.normal(100 + 50 * (i % 2), 20, size=(20, 24, 18)).astype(np.float32)
        export_class_label(root, f"subj-{i}", label, image=vol, meta=ImageMeta.identity(3), tabular=daft_row(i))
    return root


def daft_row(i: int) -> dict[str, float | None]:
    return {"age": 70.0 + i, "gender": float(i % 2), "education": 16.0, "APOE4": float(i % 3),
            "ABETA": None if i % 3 == 0 else 900.0 + 10 * i, "TAU": 240.0, "PTAU": None, "FDG": 1.2,
            "AV45": None if i == 1 else 1.1}


def test_balanced_accuracy_on_a_hand_made_example() -> None:
    truth = [0, 0, 0, 0, 0, 0, 1, 1]
    assert balanced_accuracy(truth, [0] * 8) == pytest.approx(0.5)  # majority class: recall 1 and 0
    assert accuracy(truth, [0] * 8) == pytest.approx(0.75)
    # recalls 4/6, 1/2 and 1/1
    three = balanced_accuracy([0, 0, 0, 0, 0, 0, 1, 1, 2], [0, 0, 0, 0, 1, 2, 1, 0, 2])
    assert three == pytest.approx((4 / 6 + 0.5 + 1) / 3)
    assert balanced_accuracy([0, 0, 1], [2, 0, 1]) == pytest.approx((0.5 + 1) / 2)  # only classes in the truth count
    with pytest.raises(ValueError, match="non-empty"):
        balanced_accuracy([], [])


def test_class_names_keep_the_base_order_only_when_it_holds_every_label() -> None:
    assert class_names_for(["Dementia", "CN"], ("CN", "MCI", "Dementia")) == ["CN", "MCI", "Dementia"]
    assert class_names_for(["polyp", "normal"], ("CN", "MCI", "Dementia")) == ["normal", "polyp"]
    assert class_names_for(["b", "a", "b"], ()) == ["a", "b"]


def test_model_overrides_name_each_factorys_argument(frames: Path, volumes: Path) -> None:
    assert ClassifyTask.model_overrides(frames, get_spec("crossvit_tiny_test")) == {"num_classes": 2}
    assert ClassifyTask.model_overrides(frames, get_spec("resnet34")) == {"num_classes": 2}
    assert ClassifyTask.model_overrides(frames, get_spec("deit_small")) == {"num_classes": 2}
    assert ClassifyTask.model_overrides(frames, get_spec("daft")) == {"n_outputs": 2}  # labels not DAFT's names
    assert ClassifyTask.model_overrides(volumes, get_spec("daft")) == {}  # CN / Dementia: DAFT's 3 classes stay


def test_a_row_without_an_image_is_refused_by_name(tmp_path: Path) -> None:
    root = tmp_path / "no_image"
    export_class_label(root, "with-image", "a", image=np.zeros((8, 8), np.uint8), meta=ImageMeta.identity(2))
    export_class_label(root, "lonely", "b")
    with pytest.raises(ValueError, match="case lonely has no image"):
        ClassifyTask.model_overrides(root, get_spec("crossvit_tiny_test"))
    cfg = FinetuneConfig(dataset=str(root), out_dir=str(tmp_path / "run"), model="crossvit_tiny_test", epochs=1)
    with pytest.raises(ValueError, match="lonely"):
        run(cfg)


def test_crossvit_learns_bright_vs_dark_and_the_promoted_checkpoint_reloads(frames: Path, tmp_path: Path) -> None:
    ids = [f"frame-{s}" for s in range(12)]
    _, val = split(ids, 0.34, 0)
    assert {int(ids[i].split("-")[1]) % 2 for i in val} == {0, 1}  # both classes are validated
    cfg = FinetuneConfig(dataset=str(frames), out_dir=str(tmp_path / "run"), model="crossvit_tiny_test", epochs=3,
                         lr=1e-3, batch_size=4, val_fraction=0.34, seed=0, augment="flips")
    events, result = run(cfg)
    assert result.metric == "balanced accuracy" and events[0].metric == "balanced accuracy"
    losses = [h["train_loss"] for h in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert result.promoted and result.best_metric == 1.0 > result.base_metric

    model = create_model("crossvit_tiny_test", checkpoint=result.version)
    manifest = model.checkpoint_info.manifest
    assert manifest["class_names"] == ["bright", "dark"] and model.num_classes == 2
    extra = manifest["extra"]
    assert extra["val_accuracy"] == 1.0 and "base_val_accuracy" in extra and extra["class_names"] == ["bright", "dark"]

    # the task prepares frames exactly as the predictor does: same probabilities on the exported files
    from napari_medvit.inference.predictor import Predictor
    from napari_medvit.io import read_image

    task = ClassifyTask(frames, model, torch.device("cpu"), val_fraction=0.34, seed=0, size=None, augment="none")
    predictor = Predictor(model, device="cpu")
    for case, x in zip(task.val_ids, task.xs_v, strict=True):
        image, meta = read_image(frames / "images" / f"{case}.png")
        probs = predictor.predict(image, meta).probabilities
        expected = torch.softmax(model(x[None]), dim=-1)[0].detach().numpy()
        np.testing.assert_allclose(probs, expected, atol=1e-5)
        assert predictor.class_names[int(probs.argmax())] == ("bright" if int(case.split("-")[1]) % 2 else "dark")


def test_label_smoothing_for_crossvit_only_and_timm_baselines_train(frames: Path) -> None:
    model = create_model("resnet34", num_classes=2, layers=[1, 1, 1, 1])
    task = ClassifyTask(frames, model, torch.device("cpu"), val_fraction=0.25, seed=0, size=(64, 64),
                        augment="standard")
    assert task.loss_fn.label_smoothing == 0.0 and task.default_lr == 1e-4
    x, y = task.batch([0, 1, 2], torch.Generator().manual_seed(1))
    assert x.shape == (3, 3, 64, 64) and y.tolist() == task.ys_t[:3].tolist()
    again, _ = task.batch([0, 1, 2], torch.Generator().manual_seed(1))
    assert torch.equal(x, again) and not torch.equal(x, task.xs_t[:3])  # seeded, and augmented
    model.train()
    loss = task.loss(model, (x, y))
    loss.backward()
    assert np.isfinite(float(loss)) and 0.0 <= task.evaluate(model) <= 1.0 and task.accuracy is not None
    crossvit = create_model("crossvit_tiny_test", num_classes=2)
    assert ClassifyTask(frames, crossvit, torch.device("cpu"), val_fraction=0.25, seed=0, size=None,
                        augment="none").loss_fn.label_smoothing == 0.1


def test_daft_trains_one_epoch_on_volumes_with_missing_tabular_values(volumes: Path, tmp_path: Path) -> None:
    model = create_model("daft")
    task = ClassifyTask(volumes, model, torch.device("cpu"), val_fraction=0.34, seed=0, size=(32, 32, 32),
                        augment="standard")
    assert task.class_names == ["CN", "MCI", "Dementia"] and task.default_lr == 0.013
    # an untrained DAFT gets the training rows' statistics (recorded for the predictor in the version's manifest)
    features = task.preprocessing["tabular"]
    assert [f["name"] for f in features] == [f["name"] for f in get_spec("daft").preprocessing["tabular"]]
    ages = [daft_row(int(case.split("-")[1]))["age"] for case in task.train_ids]
    age = next(f for f in features if f["name"] == "age")
    assert age["mean"] == pytest.approx(np.mean(ages)) and age["std"] == pytest.approx(np.std(ages))
    for k, case in enumerate(task.train_ids):  # rows encoded as the predictor encodes them (missing: 0, indicator 1)
        expected = tabular_vector(features, daft_row(int(case.split("-")[1])))
        np.testing.assert_allclose(task.tab_t[k].numpy(), expected, atol=1e-6)
    assert task.tab_t.shape[1] == 14 and float(task.tab_t[:, 9:].sum()) >= len(task.train_ids)  # PTAU always missing

    x, tab, y = task.batch([0, 1], torch.Generator().manual_seed(3))
    x2, _, _ = task.batch([0, 1], torch.Generator().manual_seed(3))
    assert x.shape == (2, 1, 32, 32, 32) and torch.equal(x, x2)
    flipped = augment_3d(task.xs_t[:2], torch.Generator().manual_seed(3), "flips")
    assert torch.allclose(flipped.flatten(1).sort(1).values, task.xs_t[:2].flatten(1).sort(1).values)  # no jitter

    cfg = FinetuneConfig(dataset=str(volumes), out_dir=str(tmp_path / "run"), model="daft", epochs=1, batch_size=2,
                         val_fraction=0.34, seed=0, size=(32, 32, 32))
    events, result = run(cfg)
    steps = [e.train_loss for e in events if e.kind == "step"]
    assert len(steps) == 2 and all(np.isfinite(steps)) and np.isfinite(result.history[0]["train_loss"])
    assert 0.0 <= result.history[0]["val_metric"] <= 1.0


def test_daft_inputs_match_the_predictors(volumes: Path, tmp_path: Path) -> None:
    from napari_medvit.inference.predictor import Predictor
    from napari_medvit.io import read_image
    from napari_medvit.models.checkpoint import Manifest, save_checkpoint

    trained = tmp_path / "daft.safetensors"  # a trained base keeps its own tabular encoding
    save_checkpoint(create_model("daft"), trained, Manifest(arch="daft", config={}, trained=True,
                                                            class_names=["CN", "MCI", "Dementia"]))
    model = create_model("daft", checkpoint=trained)
    task = ClassifyTask(volumes, model, torch.device("cpu"), val_fraction=0.34, seed=0, size=None, augment="none")
    assert task.preprocessing == {}
    assert tuple(task.xs_v.shape[2:]) == (64, 64, 64)
    predictor = Predictor(model, device="cpu")
    for case, x, tab in zip(task.val_ids, task.xs_v, task.tab_v, strict=True):
        image, meta = read_image(volumes / "images" / f"{case}.nii.gz")
        probs = predictor.predict(image, meta, tabular=daft_row(int(case.split("-")[1]))).probabilities
        expected = torch.softmax(model(x[None], tab[None]), dim=-1)[0].detach().numpy()
        np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_resnet3d_fine_tunes_on_volumes_without_tabular_inputs_and_its_checkpoint_reloads(
        volumes: Path, tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    model = create_model("resnet3d")
    task = ClassifyTask(volumes, model, torch.device("cpu"), val_fraction=0.34, seed=0, size=(16, 16, 16),
                        augment="flips")
    assert task.volume and not task.tabular and task.tab_t is None and task.preprocessing == {}
    assert task.class_names == ["CN", "MCI", "Dementia"] and task.default_lr == 0.013 and task.weight_decay == 0.0
    assert ClassifyTask.model_overrides(volumes, get_spec("resnet3d")) == {}  # CN / Dementia: its 3 classes stay
    x, y = task.batch([0, 1], torch.Generator().manual_seed(3))  # (volume, label): the tabular columns are ignored
    assert x.shape == (2, 1, 16, 16, 16) and y.tolist() == task.ys_t[:2].tolist()
    assert torch.equal(x, task.batch([0, 1], torch.Generator().manual_seed(3))[0])
    model.train()
    loss = task.loss(model, (x, y))
    loss.backward()
    assert np.isfinite(float(loss.detach())) and model.fc.weight.grad is not None

    # random volumes cannot be learnt in 2 epochs: the base model's score is set below any real one so that
    # the best epoch is promoted; the epochs' scores are the real validation balanced accuracies
    real, scores = ClassifyTask.evaluate, []

    def evaluate(self: ClassifyTask, model: torch.nn.Module) -> float:
        scores.append(real(self, model))
        return scores[-1] if len(scores) > 1 else -1.0

    monkeypatch.setattr(ClassifyTask, "evaluate", evaluate)
    cfg = FinetuneConfig(dataset=str(volumes), out_dir=str(tmp_path / "run"), model="resnet3d", epochs=2,
                         batch_size=2, val_fraction=0.34, seed=0, size=(16, 16, 16))
    events, result = run(cfg)
    steps = [e.train_loss for e in events if e.kind == "step"]
    assert len(steps) == 4 and all(np.isfinite(steps)) and len(result.history) == 2
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert result.promoted and result.best_metric == max(scores[1:])

    tuned = create_model("resnet3d", checkpoint=result.version)
    manifest = tuned.checkpoint_info.manifest
    assert manifest["class_names"] == ["CN", "MCI", "Dementia"] and tuned.checkpoint_info.trained
    assert "tabular" not in (manifest["preprocessing"] or {}) and "tabular" not in manifest["extra"]
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    for key, value in tuned.state_dict().items():
        torch.testing.assert_close(value, best[key], msg=key)


def test_resnet3d_inputs_match_the_predictors(volumes: Path) -> None:
    from napari_medvit.inference.predictor import Predictor
    from napari_medvit.io import read_image

    torch.manual_seed(0)
    model = create_model("resnet3d")
    task = ClassifyTask(volumes, model, torch.device("cpu"), val_fraction=0.34, seed=0, size=None, augment="none")
    assert tuple(task.xs_v.shape[1:]) == (1, 64, 64, 64)  # the registry's resize3d
    predictor = Predictor(model, device="cpu")
    seen = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        for case, x in zip(task.val_ids, task.xs_v, strict=True):
            image, meta = read_image(volumes / "images" / f"{case}.nii.gz")
            probs = predictor.predict(image, meta).probabilities
            torch.testing.assert_close(seen[-1], x[None])  # the very tensor the predictor feeds the model
            expected = torch.softmax(model(x[None]), dim=-1)[0].detach().numpy()
            np.testing.assert_allclose(probs, expected, atol=1e-5)
    finally:
        handle.remove()


def test_a_checkpoint_with_other_classes_gets_a_new_head_and_keeps_the_rest(frames: Path, tmp_path: Path,
                                                                            monkeypatch) -> None:
    from napari_medvit.models import head_prefixes
    from napari_medvit.models.checkpoint import CheckpointError, Manifest, save_checkpoint

    torch.manual_seed(0)
    old = create_model("crossvit_tiny_test", num_classes=2)
    ckpt = save_checkpoint(old, tmp_path / "present_absent.safetensors",
                           Manifest(arch="crossvit_tiny_test", config=old.config, class_names=["absent", "present"],
                                    trained=True))
    spec = get_spec("crossvit_tiny_test")
    # bright / dark are not the checkpoint's classes: the data asks for its own 2-class head
    assert ClassifyTask.model_overrides(frames, spec, ["absent", "present"]) == {"num_classes": 2}
    assert ClassifyTask.model_overrides(frames, spec, ["bright", "dark"]) == {}  # the same classes: keep the head
    with pytest.raises(CheckpointError, match="mis-shaped"):
        create_model("crossvit_tiny_test", checkpoint=ckpt, num_classes=3)  # strict by default
    new = create_model("crossvit_tiny_test", checkpoint=ckpt, new_head=True, num_classes=3)
    assert head_prefixes(new) == ("head.0", "head.1") and new.checkpoint_info.new_head == ("head.0", "head.1")
    assert new.head[0].out_features == 3 and new.checkpoint_info.manifest["class_names"] == []
    ref = old.state_dict()
    for key, value in new.state_dict().items():
        if not key.startswith("head."):
            torch.testing.assert_close(value, ref[key], msg=key)  # everything but the head is the checkpoint's
    with pytest.raises(ValueError, match="no checkpoint"):
        create_model("crossvit_tiny_test", new_head=True)

    scores = iter([0.5, 0.9])  # the base (new head) and epoch 1: promoted
    monkeypatch.setattr(ClassifyTask, "evaluate", lambda *a, **k: next(scores))
    cfg = FinetuneConfig(dataset=str(frames), out_dir=str(tmp_path / "run"), model="crossvit_tiny_test", epochs=1,
                         checkpoint=str(ckpt), batch_size=4, augment="none")
    _, result = run(cfg)
    assert result.promoted
    tuned = create_model("crossvit_tiny_test", checkpoint=result.version)
    manifest = tuned.checkpoint_info.manifest
    assert manifest["class_names"] == ["bright", "dark"] and manifest["extra"]["new_head"] == ["head.0", "head.1"]
    assert manifest["extra"]["base_checkpoint"] == str(ckpt)
