"""Inference figures for TransFuse on this machine (prints a table; not part of the test suite).

    .venv/bin/python benchmarks/bench_inference.py [--models transfuse_s transfuse_l] [--repeats 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["transfuse_s", "transfuse_l"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from napari_medvit.inference import Predictor
    from napari_medvit.io import read_image
    from napari_medvit.models import create_model
    from napari_medvit.synthetic import generate_endoscopy_frame

    frame = generate_endoscopy_frame(0, shape=(288, 384)).image
    volume = read_image(_mni())[0] if _mni() else None
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    print(f"{'model':14s} {'precision':9s} {'build s':>8s} {'frame ms':>9s} {'sd':>6s} {'vol slices/s':>13s} "
          f"{'max RSS MiB':>12s}")
    for name in args.models:
        t0 = time.perf_counter()
        model = create_model(name)
        build = time.perf_counter() - t0
        for precision in ("fp32", "bf16"):
            predictor = Predictor(model, device=args.device, precision=precision)
            predictor.predict(frame)  # warm-up
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                predictor.predict(frame)
                times.append((time.perf_counter() - t) * 1000)
            rate = float("nan")
            if volume is not None:
                sub = volume[::8]
                t = time.perf_counter()
                predictor.predict(sub)
                rate = sub.shape[0] / (time.perf_counter() - t)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{name:14s} {precision:9s} {build:8.2f} {statistics.median(times):9.1f} "
                  f"{statistics.pstdev(times):6.1f} {rate:13.2f} {rss:12.0f}")


def _mni() -> str | None:
    from pathlib import Path

    import napari_medvit

    path = Path(napari_medvit.__file__).parent / "sample_data" / "mni152_t1_1mm.nii.gz"
    return str(path) if path.exists() else None


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
