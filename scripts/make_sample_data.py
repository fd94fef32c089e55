"""Regenerate the synthetic endoscopy sample frame and its ground-truth mask.

Usage (from the repository root)::

    python scripts/make_sample_data.py            # writes sample_data/endoscopy_polyp{,_mask}.png
    python scripts/make_sample_data.py --out DIR  # writes them somewhere else

The frame is ``generate_endoscopy_frame(SAMPLE_FRAME_SEED, SAMPLE_FRAME_SHAPE, n_polyps=1)``;
the mask PNG holds 0 (background) and 1 (polyp) as uint8. The real MRI and CT files in
sample_data/ are copied from third-party packages, not generated: see sample_data/README.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skimage import io

from napari_medvit.synthetic import SAMPLE_FRAME_SEED, SAMPLE_FRAME_SHAPE, generate_endoscopy_frame

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE_NAME = "endoscopy_polyp.png"
MASK_NAME = "endoscopy_polyp_mask.png"


def make_endoscopy_sample(out_dir: Path) -> tuple[Path, Path]:
    """Write the sample frame and mask into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = generate_endoscopy_frame(SAMPLE_FRAME_SEED, SAMPLE_FRAME_SHAPE, n_polyps=1)
    image_path, mask_path = out_dir / IMAGE_NAME, out_dir / MASK_NAME
    io.imsave(image_path, frame.image, check_contrast=False)
    io.imsave(mask_path, frame.mask, check_contrast=False)
    return image_path, mask_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "sample_data", help="output folder")
    args = parser.parse_args(argv)
    for path in make_endoscopy_sample(args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
