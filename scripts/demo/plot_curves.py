"""Print and plot the validation curves of fine-tuning runs (their ``history.json``).

    python scripts/demo/plot_curves.py RUN_A RUN_B [--labels A B] [--title T] [--to docs/curves.png]

Prints one row per epoch with each run's validation metric and train loss, and saves the
curves as a PNG (pyqtgraph's exporter; Qt runs offscreen, no display needed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def read(run: str) -> dict:
    path = Path(run) / "history.json"
    if not path.is_file():
        raise SystemExit(f"{run}: no history.json (has the run finished an epoch?)")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--labels", nargs="+", default=None)
    parser.add_argument("--title", default="")
    parser.add_argument("--to", default=None, help="PNG to write")
    args = parser.parse_args(argv)
    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit("give one label per run")
    hist = [read(r) for r in args.runs]
    metrics = {h["metric"] for h in hist}
    if len(metrics) != 1:
        raise SystemExit(f"the runs have different metrics: {sorted(metrics)}")
    metric = metrics.pop()
    n = max(len(h["epochs"]) for h in hist)
    print("epoch  " + "  ".join(f"{lab + ' ' + metric:>24} {'loss':>7}" for lab in labels))
    print("base   " + "  ".join(f"{h['base_val_metric']:>24.3f} {'':>7}" for h in hist))
    for i in range(n):
        cells = []
        for h in hist:
            e = h["epochs"][i] if i < len(h["epochs"]) else None
            cells.append(f"{e['val_metric']:>24.3f} {e['train_loss']:>7.3f}" if e else f"{'':>24} {'':>7}")
        print(f"{i + 1:>5}  " + "  ".join(cells))
    common = min(len(h["epochs"]) for h in hist)
    best = [max(e["val_metric"] for e in h["epochs"][:common]) for h in hist]
    print(f"best {metric} within the first {common} epochs: "
          + ", ".join(f"{lab} {b:.3f}" for lab, b in zip(labels, best, strict=True)))
    if args.to:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        import pyqtgraph as pg
        import pyqtgraph.exporters
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance() or QApplication(sys.argv[:1])
        pg.setConfigOptions(antialias=True, background="w", foreground="k")
        plot = pg.PlotWidget(title=args.title)
        plot.resize(760, 440)
        plot.addLegend(offset=(10, 10))
        plot.setLabel("bottom", "epoch")
        plot.setLabel("left", f"validation {metric}")
        plot.showGrid(x=True, y=True, alpha=0.3)
        plot.getAxis("left").enableAutoSIPrefix(False)
        plot.setYRange(0.0, 1.0, padding=0.02)
        colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
        for k, (h, lab) in enumerate(zip(hist, labels, strict=True)):
            xs = [0] + [e["epoch"] for e in h["epochs"]]
            ys = [h["base_val_metric"]] + [e["val_metric"] for e in h["epochs"]]
            plot.plot(xs, ys, name=lab, pen=pg.mkPen(colours[k % 4], width=2.5), symbol="o", symbolSize=6,
                      symbolBrush=colours[k % 4])
        plot.show()
        app.processEvents()
        Path(args.to).parent.mkdir(parents=True, exist_ok=True)
        pg.exporters.ImageExporter(plot.plotItem).export(str(args.to))
        print(f"wrote {args.to}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
