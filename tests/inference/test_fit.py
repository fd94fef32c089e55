"""Whether a model fits an image, told in plain words before any model is built."""

from __future__ import annotations

import sys

from napari_medvit.inference.fit import check_input
from napari_medvit.io import ImageMeta
from napari_medvit.models.config import resolve


def test_problems_and_cautions_in_plain_words() -> None:
    frame = ImageMeta.identity(2, rgb=True)
    fit = check_input(resolve("swin_unetr_demo"), (288, 384, 3), frame)
    assert fit.problems == ["Swin-UNETR (demo config) segments 2 co-registered volumes; the image is a colour "
                            "288x384 photo"]
    assert check_input(resolve("unetr"), (64, 64), ImageMeta.identity(2)).problems == [
        "UNETR segments a 3D volume (CT or MRI); the image is a 2D image of 64x64"]
    assert check_input(resolve("smca_detr_demo"), (20, 64, 64), ImageMeta.identity(3)).problems
    brain = check_input(resolve("transfuse_demo"), (91, 109, 91), ImageMeta.identity(3))
    assert not brain.problems and brain.cautions == [
        "TransFuse (demo config) works on colour endoscopy frames; the image is a 3D grey volume of 91x109x91: it "
        "would run on each of its 91 slices in turn, and a model trained on other images says little here"]
    assert check_input(resolve("transfuse_demo"), (3, 48, 40), ImageMeta.identity(3)).ok  # a few slices: no word
    assert check_input(resolve("transfuse_demo"), (288, 384, 3), frame).ok
    twice = check_input(resolve("vosht_demo"), (40, 48, 40), ImageMeta.identity(3), channel_sources=("FLAIR", "FLAIR"))
    assert twice.cautions == ["VoSHT approximation (demo config) takes 2 different modalities; 'FLAIR' is chosen "
                              "more than once"]


def test_the_check_imports_no_torch() -> None:
    import subprocess

    code = ("import sys; from napari_medvit.inference.fit import check_input; from napari_medvit.models.config "
            "import resolve; from napari_medvit.io import ImageMeta; check_input(resolve('unetr'), (8, 8), "
            "ImageMeta.identity(2)); assert 'torch' not in sys.modules, 'torch imported'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
