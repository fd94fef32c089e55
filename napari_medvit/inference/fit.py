"""Does a model fit an image? Checked from the shapes and the resolved configuration, before any model is built.

:func:`check_input` gives, in plain words, the ``problems`` that stop a run (a 3D network on a photo, a
detector on a volume) and the ``cautions`` a user may override (a 2D colour-frame model run slice by slice
over a grey volume, the same image given as two modalities). It imports no torch: the inference dock asks it
before it builds a model, which takes seconds to tens of seconds for the larger networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from napari_medvit.io.meta import ImageMeta
from napari_medvit.models.config import ResolvedConfig

MANY_SLICES = 8  # a 2D model over more slices than this runs long enough to deserve a word first


@dataclass
class Fit:
    problems: list[str] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.cautions


def _what(shape: tuple[int, ...], meta: ImageMeta | None) -> str:
    rgb = bool(meta is not None and meta.rgb)
    spatial = shape[:-1] if rgb else shape
    if rgb:
        return f"a colour {'x'.join(map(str, spatial))} {'photo' if len(spatial) == 2 else 'image'}"
    kind = "2D image" if len(spatial) == 2 else f"{len(spatial)}D grey volume"
    return f"a {kind} of {'x'.join(map(str, spatial))}"


def check_input(config: ResolvedConfig, shape: tuple[int, ...], meta: ImageMeta | None, *,
                channel_sources: tuple[str, ...] = ()) -> Fit:
    """What stops or should give pause to ``config``'s model on an image of ``shape`` (with ``meta``).

    ``channel_sources``: the names of the layers stacked as a multi-channel model's modalities."""
    fit = Fit()
    name = config.spec.display_name
    rgb = bool(meta is not None and meta.rgb)
    spatial = shape[:-1] if rgb else shape
    image = _what(tuple(shape), meta)
    if config.dims == 3:
        modalities = f"{config.in_chans} co-registered volumes" if config.in_chans > 1 else "a 3D volume (CT or MRI)"
        if rgb or len(spatial) < 3:
            fit.problems.append(f"{name} segments {modalities}; the image is {image}")
    elif config.task == "detect" and len(spatial) != 2:
        fit.problems.append(f"{name} detects objects in single 2D frames; the image is {image}")
    elif len(spatial) >= 3 and not rgb:
        slices = 1
        for n in spatial[:-2]:
            slices *= int(n)
        frames = "colour endoscopy frames" if config.preprocessing.color == "rgb" else "2D images"
        if slices > MANY_SLICES:
            fit.cautions.append(f"{name} works on {frames}; the image is {image}: it would run on each of its "
                                f"{slices} slices in turn, and a model trained on other images says little here")
    if len(set(channel_sources)) < len(channel_sources):
        twice = sorted({s for s in channel_sources if channel_sources.count(s) > 1})
        fit.cautions.append(f"{name} takes {len(channel_sources)} different modalities; '{twice[0]}' is chosen more "
                            "than once")
    return fit
