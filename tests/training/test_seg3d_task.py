from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medvit.io import ImageMeta
from napari_medvit.models import create_model
from napari_medvit.training.export import export_case
from napari_medvit.training.finetune import FinetuneConfig, finetune
from napari_medvit.training.seg3d import Segment3DTask


def sphere_case(seed: int, channels: int = 1,
                shape: tuple[int, int, int] = (32, 32, 64)) -> tuple[np.ndarray, np.ndarray]:
    """A noisy volume with a bright sphere (label 1, radius 4-6) near its centre."""
    rng = np.random.default_rng(seed)
    centre = [rng.integers(n // 2 - 5, n // 2 + 6) for n in shape]
    radius = rng.uniform(4.0, 6.0)
    zz, yy, xx = np.indices(shape)
    inside = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2
    images = [(rng.normal(100.0, 10.0, inside.shape) + 120.0 * (c + 1) * inside).astype(np.float32)
              for c in range(channels)]
    return (images[0] if channels == 1 else np.stack(images)), inside.astype(np.uint8)


def make_dataset(root: Path, n: int, channels: int = 1, shape: tuple[int, int, int] = (32, 32, 64)) -> Path:
    for seed in range(n):
        image, labels = sphere_case(seed, channels, shape)
        export_case(root, f"case-{seed}", image, ImageMeta.identity(3), labels,
                    label_names={"background": 0, "lesion": 1},
                    channel_names={str(c): f"MR{c}" for c in range(channels)})
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("export3d") / "Dataset002_spheres", 5)


def run(cfg: FinetuneConfig):
    gen = finetune(cfg)
    steps = []
    while True:
        try:
            event = next(gen)
            if event.kind == "step":
                steps.append(event.train_loss)
        except StopIteration as stop:
            return steps, stop.value


def tiny_swin() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("swin_unetr_tiny_test")


def test_patches_have_the_roi_size_and_half_hold_foreground(tmp_path: Path) -> None:
    big = make_dataset(tmp_path / "big", 5, shape=(96, 96, 96))  # a small lesion in a large volume
    task = Segment3DTask(big, tiny_swin(), torch.device("cpu"), val_fraction=0.25, seed=0, size=(32, 32, 64),
                         augment="none")
    assert task.class_names == ["background", "lesion", "class 2"]  # the data's names, by value
    assert task.n_train == 4 and len(task.val_ids) == 1
    gen = torch.Generator().manual_seed(0)
    centres, any_fg = [], []
    for _ in range(25):
        x, y = task.batch(list(range(task.n_train)), gen)
        assert x.shape == (4, 1, 32, 32, 64) and y.shape == (4, 1, 32, 32, 64) and y.dtype == torch.long
        centres += (y[:, 0, 16, 16, 32] > 0).tolist()
        any_fg += (y.flatten(1).amax(1) > 0).tolist()
    # pos=1, neg=1: half the patches are centred on a foreground voxel, the others on background
    # (some of which still reach the lesion)
    assert 0.35 < np.mean(centres) < 0.65, np.mean(centres)
    assert np.mean(centres) <= np.mean(any_fg) < 0.9, np.mean(any_fg)
    # the intensities are the predictor's (robust 0..1 scaling)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # the same generator seed gives the same patches; augmentation keeps the shapes
    a = task.batch([0, 1], torch.Generator().manual_seed(3))
    b = task.batch([0, 1], torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    task_std = Segment3DTask(big, tiny_swin(), torch.device("cpu"), val_fraction=0.25, seed=0,
                             size=(64, 64, 64), augment="standard")
    xs, ys = task_std.batch([0, 1, 2], torch.Generator().manual_seed(1))
    assert xs.shape == (3, 1, 64, 64, 64) and set(ys.unique().tolist()) <= {0, 1}


def test_volumes_smaller_than_the_roi_are_padded(dataset: Path) -> None:
    task = Segment3DTask(dataset, tiny_swin(), torch.device("cpu"), val_fraction=0.25, seed=0, size=None,
                         augment="flips")  # the registry's roi 64^3 on 32x32x64 volumes
    x, y = task.batch([0], torch.Generator().manual_seed(0))
    assert x.shape == (1, 1, 64, 64, 64) and int(y.sum()) > 0


@pytest.mark.parametrize(("name", "size"), [("swin_unetr_tiny_test", (32, 32, 64)), ("unetr_tiny_test", (32, 32, 32))])
def test_finetune_runs_with_finite_losses_and_a_dice(dataset: Path, tmp_path: Path, name: str, size: tuple) -> None:
    cfg = FinetuneConfig(dataset=str(dataset), out_dir=str(tmp_path / "run"), model=name, epochs=1, batch_size=2,
                         size=size, augment="flips", lr=1e-3)
    steps, result = run(cfg)
    assert len(steps) == 2 and all(np.isfinite(steps))
    assert result.metric == "Dice"
    for value in (result.base_metric, result.best_metric):
        assert isinstance(value, float) and 0.0 <= value <= 1.0


def test_loss_goes_down_on_one_batch(dataset: Path) -> None:
    model = tiny_swin()
    task = Segment3DTask(dataset, model, torch.device("cpu"), val_fraction=0.25, seed=0, size=(32, 32, 64),
                         augment="none")
    batch = task.batch([0, 1], torch.Generator().manual_seed(0))
    opt = task.optimizer(model.parameters(), 2e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = task.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_truenet_trains_each_plane_on_its_own_slices(dataset: Path) -> None:
    torch.manual_seed(0)
    model = create_model("truenet", n_channels=1, init_channels=4)
    task = Segment3DTask(dataset, model, torch.device("cpu"), val_fraction=0.25, seed=0, size=None, augment="standard")
    batch = task.batch([0, 1], torch.Generator().manual_seed(0))
    assert set(batch) == {"axial", "coronal", "sagittal"}
    for x, y in batch.values():
        assert x.shape[:2] == (2 * task.training.slices_per_case, 1) and y.shape == (len(x), 1, *x.shape[2:])
    assert batch["axial"][0].shape[2:] == (32, 64) and batch["sagittal"][0].shape[2:] == (32, 32)
    summary = task.summary()  # slices, not patches; no output-layer prior or class weights for the plane networks
    assert not {"patches_per_case", "output_bias", "class_weights"} & set(summary)
    opt = task.optimizer(model.parameters(), 1e-2)
    model.train()
    losses = []
    for _ in range(6):
        loss = task.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    dice = task.evaluate(model)
    assert 0.0 <= dice <= 1.0


def test_channel_and_label_mismatches_are_named(dataset: Path, tmp_path: Path) -> None:
    two = make_dataset(tmp_path / "two_channels", 2, channels=2)
    with pytest.raises(ValueError, match=r"2 channel\(s\).*in_channels=1"):
        Segment3DTask(two, create_model("unetr_tiny_test"), torch.device("cpu"), val_fraction=0.5, seed=0,
                      size=None, augment="none")
    cfg = FinetuneConfig(dataset=str(dataset), out_dir=str(tmp_path / "run"), model="unetr_tiny_test",
                         config_overrides={"in_channels": 2}, epochs=1)
    with pytest.raises(ValueError, match=r"1 channel\(s\).*in_channels=2"):
        run(cfg)
    four = tmp_path / "four_labels"
    for seed in range(2):
        image, labels = sphere_case(seed)
        export_case(four, f"case-{seed}", image, ImageMeta.identity(3), labels * 3,
                    label_names={"background": 0, "lesion": 1, "other": 3})
    with pytest.raises(ValueError, match=r"label values \[0, 1, 3\].*out_channels=3"):
        Segment3DTask(four, create_model("unetr_tiny_test"), torch.device("cpu"), val_fraction=0.5, seed=0,
                      size=None, augment="none")
    with pytest.raises(ValueError, match=r"fixed img_size \(32, 32, 32\).*\(64, 64, 64\)"):
        Segment3DTask(dataset, create_model("unetr_tiny_test"), torch.device("cpu"), val_fraction=0.25, seed=0,
                      size=(64, 64, 64), augment="none")


def test_an_untrained_output_layer_starts_at_the_class_prior(dataset: Path) -> None:
    from dataclasses import replace

    model = tiny_swin()
    task = Segment3DTask(dataset, model, torch.device("cpu"), val_fraction=0.25, seed=0, size=(32, 32, 64),
                         augment="none")
    counts = torch.zeros(3, dtype=torch.float64)
    for _, lab in task.train_data:
        counts += torch.bincount(lab.reshape(-1).long(), minlength=3).double()
    expected = (counts + 1) / (counts.sum() + 3)  # add-one: the absent class 2 keeps a finite logit
    assert torch.allclose(task.frequencies, expected)
    assert 0.0 < float(expected[1]) < 0.05  # a small lesion: the prior is strongly background
    bias = model.out.conv.conv.bias.detach().double()
    assert torch.allclose(torch.softmax(bias, 0), expected, atol=1e-6)  # softmax(bias) is the prior
    assert task.summary()["output_bias"] == "log class frequencies" and task.training.class_weights is None
    # the untrained model now predicts background everywhere, as the prior says
    x, _ = task.batch([0], torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        assert float((model(x).argmax(1) == 0).float().mean()) > 0.95

    trained = tiny_swin()  # a trained checkpoint's output layer is left as it is
    trained.checkpoint_info = replace(trained.checkpoint_info, trained=True)
    before = trained.out.conv.conv.bias.detach().clone()
    task = Segment3DTask(dataset, trained, torch.device("cpu"), val_fraction=0.25, seed=0, size=(32, 32, 64),
                         augment="none")
    assert torch.equal(trained.out.conv.conv.bias, before) and "output_bias" not in task.summary()


def test_the_vosht_approximation_trains_with_a_class_weighted_loss(dataset: Path) -> None:
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    vosht, swin = create_model("vosht_demo", in_channels=1), create_model("swin_unetr_demo", in_channels=1)
    weighted = Segment3DTask(dataset, vosht, torch.device("cpu"), val_fraction=0.25, seed=0, size=(32, 64, 64),
                             augment="none")
    plain = Segment3DTask(dataset, swin, torch.device("cpu"), val_fraction=0.25, seed=0, size=(32, 64, 64),
                          augment="none")
    assert plain.training.class_weights is None and "class_weights" not in plain.summary()
    f = weighted.frequencies
    w = weighted.training.class_weights
    assert torch.allclose(w, f.rsqrt() / f.rsqrt().mean()) and abs(float(w.mean()) - 1.0) < 1e-9
    assert float(w[1] / w[0]) == pytest.approx(float((f[0] / f[1]).sqrt()), rel=1e-9) and float(w[1] / w[0]) > 5
    assert weighted.summary()["class_weights"] == pytest.approx(w.tolist())
    # both take the official 4 patches per case: a batch of 2 cases holds 8
    x, y = plain.batch([0, 1], torch.Generator().manual_seed(0))
    assert x.shape == (8, 1, 32, 64, 64) and y.shape == (8, 1, 32, 64, 64)
    assert plain.summary()["patches_per_case"] == weighted.training.patches_per_case == 4
    # the loss is MONAI's Dice-CE with those weights on both terms
    logits, y = torch.randn(2, 2, 8, 8, 8), (torch.rand(2, 1, 8, 8, 8) > 0.9).long()
    reference = DiceCELoss(to_onehot_y=True, softmax=True, weight=w.float())(logits, y)
    assert torch.allclose(weighted.training.loss_fn(logits, y), reference)
    assert not torch.allclose(plain.training.loss_fn(logits, y), reference)
