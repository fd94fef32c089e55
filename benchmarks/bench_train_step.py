"""Training-step time of 3D segmentation models on 64^3 FLAIR + T1 patches (prints a table; not a test).

    .venv/bin/python benchmarks/bench_train_step.py [--models swin_unetr_demo unetr_demo ...] [--patches 2]
        [--config window_size=7] [--repeats 4]

One step: forward, MONAI Dice + cross-entropy loss, backward and an AdamW update on random patches with a
sparse random label map, after one warm-up step. ``--config`` overrides the configuration of every model
(e.g. ``window_size=7``: the paper's Swin window in place of the demo configurations' 4).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["swin_unetr_demo", "unetr_demo", "unet_demo"])
    parser.add_argument("--patches", type=int, default=2, help="patches per step")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    from monai.losses import DiceCELoss

    from napari_medvit.models import create_model

    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.config)}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.patches} patches of 64^3 per step, "
          f"overrides {overrides or 'none'}")
    print(f"{'model':18s} {'parameters':>11s} {'step s':>8s} {'sd':>6s}")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.patches, 2, 64, 64, 64, generator=gen)
    y = (torch.rand(args.patches, 1, 64, 64, 64, generator=gen) > 0.998).long()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, **overrides).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
        times = []
        for i in range(args.repeats + 1):
            t0 = time.perf_counter()
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:  # the first step warms up
                times.append(time.perf_counter() - t0)
        n = sum(p.numel() for p in model.parameters())
        sd = statistics.stdev(times) if len(times) > 1 else 0.0
        print(f"{name:18s} {n:11,d} {statistics.mean(times):8.2f} {sd:6.2f}")


if __name__ == "__main__":
    main()
