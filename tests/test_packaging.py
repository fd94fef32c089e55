"""The plugin as napari sees it: manifest, entry points, imports, dependency rule, wheel + editable installs."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import npe2
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PLUGIN = "napari-medvit"


def _manifest() -> npe2.PluginManifest:
    pm = npe2.PluginManager.instance()
    pm.discover()
    return pm.get_manifest(PLUGIN)


def test_every_python_name_in_the_manifest_imports() -> None:
    manifest = _manifest()
    names = [c.python_name for c in manifest.contributions.commands]
    assert len(names) >= 9
    for python_name in names:
        module, attr = python_name.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), python_name


def test_manifest_declares_readers_writers_samples_widgets_and_the_menu_command() -> None:
    c = _manifest().contributions
    assert {s.key for s in c.sample_data} == {"endoscopy_polyp", "brain_mri", "ct_slice", "brain_flair_t1",
                                              "dementia_subject"}
    assert {w.display_name for w in c.widgets} == {"MedViT inference", "Run TransFuse", "MedViT corrections",
                                                 "MedViT fine-tune"}
    assert any(".nii.gz" in w.filename_extensions for w in c.writers)
    assert c.readers[0].accepts_directories
    assert [m.command for m in c.menus["napari/layers/segment"]] == ["napari-medvit.run_transfuse"]


def test_npe2_validate_with_imports() -> None:
    out = subprocess.run([str(BIN / "npe2"), "validate", PLUGIN, "--imports"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout.lower()


def test_import_linter_contracts_hold() -> None:
    out = subprocess.run([str(BIN / "lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout


def test_start_up_imports_no_torch_and_no_qt(tmp_path: Path) -> None:
    """napari reads our manifest and may call the reader/sample code, and the widgets list shipped
    checkpoints when they open: none of it may import torch (seconds of start-up)."""
    code = (
        "import sys, json, numpy as np;"
        "import napari_medvit, napari_medvit.models, napari_medvit.io, napari_medvit._reader, napari_medvit.cli;"
        "from napari_medvit.models import list_models; from napari_medvit.models.manifest import bundled_checkpoints;"
        "from safetensors.numpy import save_file;"
        "save_file({'w': np.zeros(2, np.float32)}, sys.argv[1] + '/demo.safetensors',"
        " metadata={'medvit_manifest': json.dumps({'arch': 'transfuse_s', 'description': 'demo'})});"
        "assert list_models();"
        "assert [m.description for _, m in bundled_checkpoints('transfuse_s', sys.argv[1])] == ['demo'];"
        "bad = [m for m in ('torch', 'timm', 'qtpy', 'PyQt6') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_editable_install_is_discovered_from_this_checkout() -> None:
    manifest = _manifest()
    module = importlib.import_module("napari_medvit")
    assert Path(module.__file__).resolve().parent == ROOT / "napari_medvit"
    assert manifest.package_metadata is not None and manifest.package_metadata.name == PLUGIN


@pytest.mark.slow
def test_wheel_install_is_discovered_by_napari(tmp_path: Path) -> None:
    """Build a wheel, install it alone into a folder, and let npe2 find and read it from there."""
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("napari_medvit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_medvit/napari.yaml" in names
    assert "napari_medvit/sample_data/endoscopy_polyp.png" in names
    assert any(n.endswith("entry_points.txt") for n in names)

    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    # Everything else from this environment, but not the editable napari-medvit.
    deps = tmp_path / "deps"
    deps.mkdir()
    purelib = Path(next(p for p in sys.path if p.endswith("site-packages")))
    for entry in purelib.iterdir():
        if "napari_medvit" in entry.name or "napari-medvit" in entry.name:
            continue
        (deps / entry.name).symlink_to(entry)
    code = (
        "import npe2, napari_medvit, sys;"
        "pm = npe2.PluginManager.instance(); pm.discover();"
        "m = pm.get_manifest('napari-medvit');"
        "print(napari_medvit.__file__);"
        "layers = npe2.read([sys.argv[1]], stack=False, plugin_name='napari-medvit');"
        "print(len(layers), layers[0][0].shape)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(deps)])}
    sample = site / "napari_medvit" / "sample_data" / "endoscopy_polyp.png"
    out = subprocess.run([sys.executable, "-S", "-c", code, str(sample)], capture_output=True, text=True,
                         timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith(str(site)), lines
    assert lines[1].startswith("1 (") and lines[1].endswith(", 3)"), lines
