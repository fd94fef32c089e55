"""Peak memory and time of 3D sliding-window segmentation on the MNI152 volume, whole vs in slabs.

    .venv/bin/python benchmarks/bench_volume_memory.py [--model unetr] [--slab-windows 4 1]

Each setting runs in a fresh process so that its peak resident memory is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
from napari_medvit.inference import Predictor
from napari_medvit.io import read_image
from napari_medvit.models import create_model
import napari_medvit, pathlib
name, slab_windows = sys.argv[1], int(sys.argv[2])
vol, meta = read_image(pathlib.Path(napari_medvit.__file__).parent / "sample_data" / "mni152_t1_1mm.nii.gz")
model = create_model(name)
p = Predictor(model, device="cpu")
p.pre["slab_windows"] = slab_windows
t = time.perf_counter()
pred = p.predict(vol, meta)
print(json.dumps({"shape": list(vol.shape), "seconds": round(time.perf_counter() - t, 1),
                  "windows": pred.provenance["windows"], "slabs": pred.provenance["slabs"],
                  "buffer_mb": pred.provenance["output_buffer_mb"],
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="unetr")
    parser.add_argument("--slab-windows", type=int, nargs="+", default=[8, 2])
    args = parser.parse_args()
    print(f"{args.model} on the MNI152 T1 (1 mm), CPU")
    print(f"{'slab windows':>12s} {'slabs':>6s} {'windows':>8s} {'seconds':>8s} {'buffer MB':>10s} "
          f"{'peak RSS MB':>12s}")
    for k in args.slab_windows:
        out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(k)], capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-2000:])
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{k:12d} {r['slabs']:6d} {r['windows']:8d} {r['seconds']:8.1f} {r['buffer_mb']:10.0f} "
              f"{r['peak_rss_mb']:12d}")


if __name__ == "__main__":
    main()
