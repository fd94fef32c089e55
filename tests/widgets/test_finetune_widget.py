from __future__ import annotations

from pathlib import Path

import pytest

from napari_medvit.io import ImageMeta
from napari_medvit.synthetic import generate_endoscopy_frame
from napari_medvit.training.export import export_case
from napari_medvit.widgets import FinetuneWidget

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_finetune_in_the_viewer_with_curves_and_promotion(make_napari_viewer, qtbot, tmp_path: Path,
                                                          monkeypatch) -> None:
    from napari_medvit.training.seg2d import Segment2DTask

    for seed in range(4):
        f = generate_endoscopy_frame(seed, shape=(64, 96), n_polyps=1)
        export_case(tmp_path / "ds", f"f{seed}", f.image, ImageMeta.identity(2, rgb=True), f.mask,
                    label_names={"background": 0, "polyp": 1})
    scores = iter([0.1, 0.3, 0.6])  # baseline, epoch 1, epoch 2: the run must be promoted
    monkeypatch.setattr(Segment2DTask, "evaluate", lambda *a, **k: next(scores))

    viewer = make_napari_viewer()
    _, inference = viewer.window.add_plugin_dock_widget("napari-medvit", "MedViT inference")
    widget = FinetuneWidget(viewer)
    widget.dataset.value, widget.out.value = tmp_path / "ds", tmp_path / "run"
    widget.model.value, widget.epochs.value, widget.batch.value = "transfuse_tiny", 2, 2
    widget.val.value = 0.5  # 4 frames: 2 validate (MIN_VALIDATION_CASES)
    widget.device.value, widget.precision.value, widget.augment.value = "cpu", "bf16", "flips"
    assert widget.lr.native.text() == "the paper's"  # 0: the task's default rate
    assert widget.start() is not None and widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert widget.result.promoted, widget.status.value
    assert [(e, d) for e, d, _ in widget.curves.epochs] == [(1, 0.3), (2, 0.6)]
    legend = [label.text for _, label in widget.curves.legend.items]
    assert legend == ["train loss", "validation Dice", "base model's Dice"]
    assert widget.status.value.startswith("promoted v1")
    # the inference widget now uses the new version, without restarting napari
    assert inference.model.value == "transfuse_tiny"
    assert inference._checkpoint_path() == widget.result.version


def test_missing_folders_are_said(make_napari_viewer) -> None:
    widget = FinetuneWidget(make_napari_viewer())
    assert widget.start() is None and "choose the export folder" in widget.status.value


def test_accepted_corrections_of_the_session_are_the_data(make_napari_viewer, qtbot, tmp_path: Path,
                                                         monkeypatch) -> None:
    import napari_medvit.training.finetune as ft
    from napari_medvit._layers import ORIGINAL_KEY, PREDICTION_KEY
    from napari_medvit.corrections import REVIEW_KEY
    from napari_medvit.widgets.finetune import FROM_SESSION

    viewer = make_napari_viewer()
    widget = FinetuneWidget(viewer)
    widget.source.value, widget.out.value = FROM_SESSION, tmp_path / "run"
    assert not widget.dataset.visible
    assert widget.start() is None and "no accepted corrections" in widget.status.value

    for seed in range(3):
        f = generate_endoscopy_frame(seed, shape=(64, 80), n_polyps=1)
        viewer.add_image(f.image, rgb=True, name=f"frame {seed}")
        metadata = {ORIGINAL_KEY: f.mask, PREDICTION_KEY: {"source_layer": f"frame {seed}", "model": "transfuse_tiny",
                                                            "class_names": ["background", "polyp"]}}
        if seed < 2:  # the third is not accepted: it stays out of the data
            metadata[REVIEW_KEY] = {"accepted": True, "time": "2026-11-25T10:00:00"}
        viewer.add_labels(f.mask, name=f"mask {seed}", metadata=metadata)
    seen = {}

    def fake_finetune(cfg):  # the dock's settings reach the loop; no training needed here
        seen["cfg"] = cfg
        return ft.FinetuneResult(False, "Dice", 0.5, 0.4, 1, None, "not promoted", [])
        yield  # a generator, as the real one

    monkeypatch.setattr(ft, "finetune", fake_finetune)
    widget.device.value, widget.precision.value, widget.lr.value = "cpu", "bf16", 3e-4
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=30_000)
    cfg = seen["cfg"]
    cases = sorted(p.name for p in (Path(cfg.dataset) / "labelsTr").iterdir())
    assert Path(cfg.dataset).parent == tmp_path / "run" / "session_data" and cases == ["frame-0.png", "frame-1.png"]
    assert (cfg.device, cfg.precision, cfg.lr) == ("cpu", "bf16", 3e-4)


def test_detection_fine_tunes_in_the_dock_with_ap50_curves(make_napari_viewer, qtbot, tmp_path: Path,
                                                           monkeypatch) -> None:
    from napari_medvit.training.detection import DetectTask
    from napari_medvit.training.export import export_boxes_coco

    for seed in range(4):
        f = generate_endoscopy_frame(seed, shape=(64, 80), n_polyps=1)
        export_boxes_coco(tmp_path / "coco", f"f{seed}", f.image, ImageMeta.identity(2, rgb=True), f.boxes,
                          ["polyp"], [0])
    scores = iter([0.2, 0.5])  # baseline, epoch 1: promoted
    monkeypatch.setattr(DetectTask, "evaluate", lambda *a, **k: next(scores))
    viewer = make_napari_viewer()
    _, inference = viewer.window.add_plugin_dock_widget("napari-medvit", "MedViT inference")
    widget = FinetuneWidget(viewer)
    widget.dataset.value, widget.out.value = tmp_path / "coco", tmp_path / "run"
    widget.model.value, widget.epochs.value, widget.batch.value = "smca_detr_tiny", 1, 2
    widget.val.value = 0.5  # 4 frames: 2 validate (MIN_VALIDATION_CASES)
    widget.device.value, widget.augment.value = "cpu", "standard"
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert widget.result.promoted and widget.result.metric == "AP50", widget.status.value
    legend = [label.text for _, label in widget.curves.legend.items]
    assert legend == ["train loss", "validation AP50", "base model's AP50"]
    assert inference.model.value == "smca_detr_tiny" and inference._checkpoint_path() == widget.result.version


def test_a_synchronous_run_promotes_through_the_session(make_napari_viewer, tmp_path: Path, monkeypatch) -> None:
    """MEDVIT_SYNC=1 runs the loop in the main thread with the same slots; a promotion is announced on
    the viewer's session and the inference dock, which subscribed to it, takes the new version."""
    import napari_medvit.training.finetune as ft
    from napari_medvit._session import session_for
    from napari_medvit.widgets import InferenceWidget

    def fake_finetune(cfg):
        yield ft.Event("baseline", 0, val_metric=0.2, metric="Dice")
        yield ft.Event("epoch", 1, train_loss=0.5, val_metric=0.4, metric="Dice")
        return ft.FinetuneResult(True, "Dice", 0.2, 0.4, 1, str(tmp_path / "run" / "v1.safetensors"), "promoted v1", [])

    monkeypatch.setattr(ft, "finetune", fake_finetune)
    monkeypatch.setenv("MEDVIT_SYNC", "1")
    viewer = make_napari_viewer()
    inference = InferenceWidget(viewer)  # not docked: it hears of the promotion through the session alone
    heard: list[tuple[str, str]] = []
    session_for(viewer).promoted.connect(lambda model, version: heard.append((model, version)))
    widget = FinetuneWidget(viewer)
    widget.dataset.value, widget.out.value = tmp_path / "ds", tmp_path / "run"
    widget.model.value = "transfuse_tiny"
    assert widget.start() is None and not widget.running  # done already
    assert widget.result.promoted and widget.status.value == "promoted v1"
    assert [(e, d) for e, d, _ in widget.curves.epochs] == [(1, 0.4)]
    assert heard == [("transfuse_tiny", widget.result.version)]
    assert inference.model.value == "transfuse_tiny" and inference._checkpoint_path() == widget.result.version
