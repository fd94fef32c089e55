"""Every bad input of ``medvit`` ends in one line on stderr and exit code 2, and nothing the user owns
is changed: outputs that are (or resolve to) inputs are refused, existing outputs need --overwrite,
all checked before a model is built. A traceback only with --debug; a bug exits 1, Ctrl-C 130."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import napari_medvit.cli as cli
from napari_medvit.cli import main

TINY = ["--model", "transfuse_tiny", "--untrained", "--device", "cpu", "-q"]


def snapshot(*paths: Path) -> dict[Path, bytes]:
    """The bytes of every file at or below ``paths`` (links followed), to compare afterwards."""
    out = {}
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        out.update({p: p.read_bytes() for p in files})
    return out


def fails(argv: list[str], capsys, *says: str, code: int = 2, keep: tuple[Path, ...] = ()) -> str:
    """Run ``medvit ARGV`` without and with --debug: ``code`` both times, one line naming ``says`` and no
    traceback without --debug, a traceback before the same line with it; the files of ``keep`` unchanged."""
    before = snapshot(*keep)
    assert main(argv) == code, capsys.readouterr()
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("medvit: warning: ")]  # --untrained
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"medvit {argv[0]}: "), lines[0]
    for text in says:
        assert text in lines[0], (text, lines[0])
    assert main(["--debug", *argv]) == code
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1] == lines[0], err
    assert snapshot(*keep) == before  # byte-identical, and no file of them gone or added
    return lines[0]


@pytest.fixture()
def frame(tmp_path: Path) -> Path:
    import skimage.io

    path = tmp_path / "frame.png"
    skimage.io.imsave(path, (np.random.default_rng(0).random((32, 40, 3)) * 255).astype(np.uint8),
                      check_contrast=False)
    return path


@pytest.fixture()
def no_model(monkeypatch) -> None:
    """Building a model fails the test: the output checks come first."""
    import napari_medvit.models as models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the output was checked")

    monkeypatch.setattr(models, "create_model", refuse)


# -- infer: the output is never an input ----------------------------------------------------------
def test_infer_refuses_to_write_the_mask_over_its_input(frame: Path, capsys, no_model) -> None:
    fails(["infer", str(frame), "-o", str(frame), *TINY], capsys, "frame.png", "is the input file",
          keep=(frame,))
    fails(["infer", str(frame), "-o", str(frame), "--overwrite", *TINY], capsys, "is the input file", keep=(frame,))


def test_infer_refuses_a_symbolic_or_hard_link_to_its_input(frame: Path, tmp_path: Path, capsys, no_model) -> None:
    soft, hard = tmp_path / "soft.png", tmp_path / "hard.png"
    soft.symlink_to(frame)
    os.link(frame, hard)
    for link in (soft, hard):
        fails(["infer", str(frame), "-o", str(link), "--overwrite", *TINY], capsys, link.name,
              "is the input file", keep=(frame,))
    assert soft.is_symlink() and os.path.samefile(hard, frame)


def test_infer_refuses_an_output_in_or_as_the_input_dicom_series_folder(tmp_path: Path, capsys, no_model) -> None:
    from pydicom.data import get_testdata_file

    series = tmp_path / "series"
    series.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), series / "IM0001.dcm")
    for target in (series / "mask.nii.gz", series / "IM0001.dcm", series):
        fails(["infer", str(series), "-o", str(target), "--overwrite", *TINY], capsys,
              "inside the input folder", str(series), keep=(series,))
    assert sorted(p.name for p in series.iterdir()) == ["IM0001.dcm"]


def test_infer_checks_the_output_before_building_a_model(frame: Path, tmp_path: Path, capsys, no_model) -> None:
    fails(["infer", str(frame), "-o", str(tmp_path / "none" / "m.png"), *TINY], capsys,
          "none", "does not exist")
    fails(["infer", str(frame), "-o", str(tmp_path / "m.jpg"), *TINY], capsys, "m.jpg", "unsupported file type")
    fails(["infer", str(frame), "-o", str(tmp_path), *TINY], capsys, "is a folder")
    volume = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 9, 4), np.float32), np.eye(4)), volume)
    fails(["infer", str(volume), "-o", str(tmp_path / "m.png"), *TINY], capsys, "m.png", "3D", keep=(volume,))
    assert not (tmp_path / "m.png").exists()


def test_infer_replaces_an_existing_output_only_with_overwrite(frame: Path, tmp_path: Path, capsys) -> None:
    mask = tmp_path / "mask.png"
    mask.write_bytes(b"the user's file")
    fails(["infer", str(frame), "-o", str(mask), *TINY], capsys, "mask.png", "exists", "--overwrite",
          keep=(mask, frame))
    # a link to another of the user's files: with --overwrite the link is replaced, its target never written
    other = tmp_path / "other.png"
    other.write_bytes(b"another file of the user's")
    link = tmp_path / "link.png"
    link.symlink_to(other)
    before = snapshot(frame, other)
    assert main(["infer", str(frame), "-o", str(link), "--overwrite", *TINY]) == 0
    assert main(["infer", str(frame), "-o", str(mask), "--overwrite", *TINY]) == 0
    assert snapshot(frame, other) == before
    assert not link.is_symlink() and link.read_bytes()[:4] == b"\x89PNG" and mask.read_bytes()[:4] == b"\x89PNG"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


# -- infer: unreadable images are the file's problem, not a traceback ------------------------------
def test_a_dicom_with_a_text_rescale_slope_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    tag = Tag(0x0028, 0x1053)
    ds._dict[tag] = RawDataElement(tag, "DS", 4, b"abc ", 0, False, True)  # RescaleSlope "abc"
    bad = tmp_path / "slope.dcm"
    ds.save_as(bad)
    assert b"abc " in bad.read_bytes()
    fails(["infer", str(bad), "-o", str(tmp_path / "m.nii.gz"), *TINY], capsys, "slope.dcm", keep=(bad,))
    assert not (tmp_path / "m.nii.gz").exists()


def test_rgb24_nifti_bad_inputs_are_one_line_errors(frame: Path, tmp_path: Path, capsys) -> None:
    rgb = np.zeros((6, 7, 3, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])  # a 4D RGB24 volume
    vol = tmp_path / "rgb4d.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), vol)
    fails(["infer", str(vol), "-o", str(tmp_path / "m.nii.gz"), *TINY], capsys, "rgb4d.nii.gz", keep=(vol,))
    labels = tmp_path / "rgb_labels.nii.gz"  # RGB24 voxels offered as a label image
    nib.save(nib.Nifti1Image(np.zeros((32, 40), dtype=rgb.dtype), np.eye(4)), labels)
    fails(["export", str(frame), str(labels), "--dataset", str(tmp_path / "ds")], capsys, "rgb_labels.nii.gz",
          keep=(labels, frame))
    assert not (tmp_path / "ds").exists()


# -- finetune: the export folder must agree with its dataset.json ----------------------------------
def export_folder(root: Path, n: int) -> Path:
    from napari_medvit.io import ImageMeta
    from napari_medvit.synthetic import generate_endoscopy_frame
    from napari_medvit.training.export import export_case

    for seed in range(n):
        f = generate_endoscopy_frame(seed, shape=(64, 80), n_polyps=1)
        export_case(root, f"f{seed}", f.image, ImageMeta.identity(2, rgb=True), f.mask,
                    label_names={"background": 0, "polyp": 1})
    return root


FT = ["--model", "transfuse_tiny", "--epochs", "1", "--size", "32", "32"]


def test_finetune_names_a_dataset_json_that_is_not_json_and_leaves_no_run_folder(tmp_path: Path, capsys) -> None:
    ds = export_folder(tmp_path / "ds", 3)
    (ds / "dataset.json").write_text("{numTraining: 3")
    fails(["finetune", str(ds), "--out", str(tmp_path / "runs" / "r1"), *FT], capsys, "dataset.json",
          "not valid JSON", keep=(ds,))
    assert not (tmp_path / "runs").exists()  # neither the run folder nor its parent was made
    empty = tmp_path / "mine"
    empty.mkdir()
    fails(["finetune", str(ds), "--out", str(empty), *FT], capsys, "dataset.json", keep=(ds,))
    assert empty.is_dir() and not list(empty.iterdir())  # a folder of the user's stays, as it was


def test_finetune_stops_when_num_training_disagrees_with_labels_tr(tmp_path: Path, capsys) -> None:
    ds = export_folder(tmp_path / "ds", 3)
    info = json.loads((ds / "dataset.json").read_text())
    (ds / "dataset.json").write_text(json.dumps({**info, "numTraining": 5}))
    fails(["finetune", str(ds), "--out", str(tmp_path / "run"), *FT], capsys, "dataset.json",
          "numTraining is 5 but labelsTr holds 3", keep=(ds,))
    assert not (tmp_path / "run").exists()


def test_finetune_stops_at_training_entries_naming_missing_files(tmp_path: Path, capsys) -> None:
    ds = export_folder(tmp_path / "ds", 3)
    info = json.loads((ds / "dataset.json").read_text())
    entries = [{"image": f"./imagesTr/f{i}.png", "label": f"./labelsTr/f{i}.png"} for i in range(3)]
    entries.append({"image": "./imagesTr/gone.png", "label": "./labelsTr/gone.png"})
    (ds / "dataset.json").write_text(json.dumps({**info, "training": entries}))
    fails(["finetune", str(ds), "--out", str(tmp_path / "run"), *FT], capsys, "dataset.json",
          "training entry 4", "gone.png", "does not exist", keep=(ds,))
    (ds / "dataset.json").write_text(json.dumps({**info, "training": entries[:2]}))
    fails(["finetune", str(ds), "--out", str(tmp_path / "run"), *FT], capsys, "dataset.json",
          "labelled but not listed: f2", keep=(ds,))
    assert not (tmp_path / "run").exists()


def test_finetune_stops_at_labels_without_their_image(tmp_path: Path, capsys) -> None:
    ds = export_folder(tmp_path / "ds", 3)
    (ds / "imagesTr" / "f1_0000.png").unlink()
    fails(["finetune", str(ds), "--out", str(tmp_path / "run"), *FT], capsys, "case f1 has labels but no image",
          "f1_0000.png", keep=(ds,))
    assert not (tmp_path / "run").exists()


# -- finetune: the run folder ---------------------------------------------------------------------
def test_resume_from_a_damaged_epoch_checkpoint_names_it_and_the_way_out(tmp_path: Path, capsys) -> None:
    ds = export_folder(tmp_path / "ds", 3)
    run = tmp_path / "run"
    run.mkdir()
    (run / "epoch_001.pt").write_bytes(b"PK\x03\x04 the first bytes of a zip, then nothing")
    (run / "history.json").write_text("{}")
    fails(["finetune", str(ds), "--out", str(run), "--resume", *FT], capsys, "epoch_001.pt",
          "cannot resume", "--overwrite", keep=(ds, run))


def test_a_folder_holding_a_run_needs_resume_or_overwrite(tmp_path: Path, capsys) -> None:
    ds = export_folder(tmp_path / "ds", 3)
    run = tmp_path / "run"
    (run / "versions").mkdir(parents=True)
    (run / "versions" / "v1.safetensors").write_bytes(b"a promoted version")
    (run / "history.json").write_text("{}")
    fails(["finetune", str(ds), "--out", str(run), *FT], capsys, "holds a fine-tuning run", "history.json",
          "--resume", "--overwrite", keep=(run,))
    fails(["finetune", str(ds), "--out", str(run), "--resume", *FT], capsys, "no epoch checkpoint", keep=(run,))
    fails(["finetune", str(ds), "--out", str(run), "--resume", "--overwrite", *FT], capsys, "not both",
          keep=(run,))
    fails(["finetune", str(ds), "--out", str(tmp_path / "new"), "--resume", *FT], capsys, "does not exist",
          "nothing to resume")
    fails(["finetune", str(ds), "--out", str(ds), *FT], capsys, "is the export folder", keep=(ds,))
    (tmp_path / "file").write_text("x")
    fails(["finetune", str(ds), "--out", str(tmp_path / "file"), *FT], capsys, "not a folder",
          keep=(tmp_path / "file",))


# -- package, synth, export ------------------------------------------------------------------------
def test_package_never_writes_over_an_input_or_an_existing_file(tmp_path: Path, capsys) -> None:
    from napari_medvit.models import create_model
    from napari_medvit.models.checkpoint import Manifest, save_checkpoint

    ds = export_folder(tmp_path / "ds", 2)
    run = tmp_path / "run"
    (run / "versions").mkdir(parents=True)
    model = create_model("transfuse_tiny")
    version = save_checkpoint(model, run / "versions" / "v1.safetensors",
                              Manifest(arch="transfuse_tiny", config=model.config, trained=True))
    (run / "active.json").write_text(json.dumps({"active": str(version)}))
    fails(["package", str(run), "--test", str(ds), "--to", str(version), "--overwrite"], capsys,
          "v1.safetensors", "is the input file", keep=(run,))
    fails(["package", str(version), "--test", str(ds), "--to", str(version), "--overwrite"], capsys,
          "is the input file", keep=(run,))
    existing = tmp_path / "demo.safetensors"
    existing.write_bytes(b"shipped weights")
    fails(["package", str(run), "--test", str(ds), "--to", str(existing)], capsys, "demo.safetensors", "exists",
          keep=(existing, run))
    fails(["package", str(run), "--test", str(ds), "--to", str(tmp_path / "no" / "d.safetensors")], capsys,
          "does not exist")
    (run / "active.json").write_text("not json")
    fails(["package", str(run), "--test", str(ds), "--to", str(tmp_path / "x.safetensors")], capsys,
          "active.json", "not valid JSON")


def test_synth_writes_only_into_a_new_or_empty_folder(tmp_path: Path, capsys) -> None:
    full = tmp_path / "mine"
    full.mkdir()
    (full / "notes.txt").write_text("the user's notes")
    fails(["synth", "endoscopy", "--out", str(full), "--n", "2", "--shape", "64", "80"], capsys, "mine",
          "not empty", keep=(full,))
    assert [p.name for p in full.iterdir()] == ["notes.txt"]


def test_export_bad_output_folders_and_coco_files_are_named(frame: Path, tmp_path: Path, capsys) -> None:
    not_a_folder = tmp_path / "ds.txt"
    not_a_folder.write_text("x")
    fails(["export", str(frame), "--class-label", "polyp", "--dataset", str(not_a_folder)], capsys, "ds.txt",
          "not a folder", keep=(not_a_folder,))
    below_a_file = not_a_folder / "ds"  # an OSError (NotADirectoryError) of the file system: named, exit 2
    fails(["export", str(frame), "--class-label", "polyp", "--dataset", str(below_a_file)], capsys,
          f"{below_a_file}: Not a directory", keep=(not_a_folder, frame))
    coco = tmp_path / "coco"
    coco.mkdir()
    (coco / "annotations.json").write_text("[not json")
    (tmp_path / "boxes.csv").write_text("y0,x0,y1,x1,class\n1,1,5,5,polyp\n")
    fails(["export", str(frame), "--boxes", str(tmp_path / "boxes.csv"), "--categories", "polyp", "--dataset",
           str(coco)], capsys, "annotations.json", keep=(coco, frame))


# -- what is no bad input ---------------------------------------------------------------------------
def test_a_bug_exits_1_and_an_interrupt_130_with_one_line(monkeypatch, capsys) -> None:
    def bug(_):
        raise RuntimeError("an internal invariant broke")

    monkeypatch.setattr(cli, "_models", bug)
    fails(["models"], capsys, "unexpected error", "RuntimeError", "--debug", code=1)

    def interrupt(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_models", interrupt)
    fails(["models"], capsys, "interrupted", code=130)


def test_usage_errors_are_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["infer", "image.png"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("medvit infer: ") and "-o/--output" in err and "--help" in err


def test_the_real_command_exits_2_and_prints_a_traceback_only_with_debug(frame: Path, tmp_path: Path) -> None:
    before = frame.read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "napari_medvit.cli", "infer", str(frame), "-o", str(frame), *TINY]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert plain.returncode == 2, plain.stderr
    assert plain.stderr.strip().splitlines() == [plain.stderr.strip()] and "Traceback" not in plain.stderr
    assert plain.stderr.startswith("medvit infer: -o ") and "frame.png" in plain.stderr
    debug = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()
    assert frame.read_bytes() == before


def test_a_series_of_volumes_is_refused_before_the_model_runs(tmp_path: Path, capsys, monkeypatch) -> None:
    series = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.float32), np.eye(4)), series)
    import napari_medvit.models as models

    monkeypatch.setattr(models, "create_model", lambda *a, **k: pytest.fail("the model was built"))
    fails(["infer", str(series), "-o", str(tmp_path / "m.nii.gz"), *TINY], capsys, str(series), "a series of 3 volumes",
          keep=(series,))
    assert not (tmp_path / "m.nii.gz").exists()


def test_an_image_the_model_cannot_take_is_named(tmp_path: Path, capsys) -> None:
    blank = tmp_path / "blank.nii.gz"
    nib.save(nib.Nifti1Image(np.full((16, 16, 16), np.nan, np.float32), np.eye(4)), blank)
    fails(["infer", str(blank), "-o", str(tmp_path / "m.nii.gz"), "--model", "swin_unetr_tiny_test", "--untrained",
           "--device", "cpu", "-q"], capsys, f"IMAGE {blank}", "no finite values")


@pytest.mark.parametrize(("argv", "says"), [
    (["finetune", "DS", "--out", "RUN", "--epochs", "-1"], "--epochs: '-1' is not a positive whole number"),
    (["finetune", "DS", "--out", "RUN", "--size", "0", "64"], "--size: '0' is not a positive whole number"),
    (["finetune", "DS", "--out", "RUN", "--val-fraction", "1.5"], "--val-fraction: '1.5' is not a fraction"),
    (["finetune", "DS", "--out", "RUN", "--seed", "-3"], "--seed: '-3' is not a whole number >= 0"),
    (["evaluate", "DS", "--model", "unet", "--size", "x"], "--size: 'x' is not a whole number"),
    (["package", "RUN", "--test", "T", "--to", "x.safetensors", "--check-fraction", "2"], "--check-fraction: '2'"),
    (["synth", "endoscopy", "--out", "D", "--n", "0"], "--n: '0' is not a positive whole number"),
])
def test_option_values_are_checked_before_anything_runs(argv: list[str], says: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and says in err, err


def test_warnings_are_one_line_naming_the_file(tmp_path: Path) -> None:
    import pydicom

    folder = tmp_path / "series"
    shutil.copytree(Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files" / "dicomdirtests" / "77654033"
                    / "CT2", folder)
    (folder / "notes.txt").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "napari_medvit.cli", "infer", str(folder), "-o",
                           str(tmp_path / "m.nii.gz"), *TINY], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    skipped = [line for line in err.splitlines() if "notes.txt" in line]
    assert skipped == [f"medvit infer: warning: {folder}: skipped 1 non-DICOM file(s): notes.txt"], err
    assert "_read_folder" not in err  # no source line of the warning
