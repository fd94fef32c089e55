"""pyqtgraph charts for the dock widgets."""

from __future__ import annotations

from collections.abc import Sequence

import pyqtgraph as pg


class ProbabilityChart(pg.PlotWidget):
    """Horizontal bars of the top-k class probabilities, most probable on top."""

    def __init__(self, parent=None, k: int = 5) -> None:
        super().__init__(parent=parent, background=None)
        self.k = k
        self.setMinimumHeight(140)
        self.setMaximumHeight(220)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.setXRange(0.0, 1.0, padding=0.02)
        self.getPlotItem().setLabel("bottom", "probability")
        self._bars: pg.BarGraphItem | None = None
        self.items: list[tuple[str, float]] = []
        self.hide()

    def set_probabilities(self, items: Sequence[tuple[str, float]], title: str = "") -> None:
        """Show ``items`` (name, probability), in the given order from the top."""
        self.items = list(items)[: self.k]
        if self._bars is not None:
            self.removeItem(self._bars)
        n = len(self.items)
        ys = list(range(n - 1, -1, -1))  # first item on top
        self._bars = pg.BarGraphItem(x0=[0] * n, y=ys, height=0.7, width=[p for _, p in self.items],
                                     brush=pg.mkBrush(230, 120, 60, 200))
        self.addItem(self._bars)
        axis = self.getPlotItem().getAxis("left")
        axis.setTicks([[(y, f"{name[:28]}  {p:.1%}") for y, (name, p) in zip(ys, self.items, strict=True)]])
        self.setYRange(-0.6, max(n - 0.4, 0.6), padding=0)
        self.getPlotItem().setTitle(title)
        self.show()

    def clear_chart(self) -> None:
        if self._bars is not None:
            self.removeItem(self._bars)
            self._bars = None
        self.items = []
        self.hide()


class AffinePlot(pg.PlotWidget):
    """DAFT's per-channel scale (alpha) and shift (beta) for the current case."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent=parent, background=None)
        self.setMinimumHeight(140)
        self.setMaximumHeight(220)
        self.hideButtons()
        # a readable key in the top-right corner, on its own background (it used to cover the first bars)
        self.addLegend(offset=(-5, 5), colCount=2, brush=pg.mkBrush(30, 30, 30, 210), labelTextColor="w")
        self.getPlotItem().setLabel("bottom", "channel of the DAFT block")
        self._items: list[pg.BarGraphItem] = []
        self.alpha: list[float] = []
        self.beta: list[float] = []
        self.hide()

    def set_affine(self, alpha: Sequence[float], beta: Sequence[float]) -> None:
        for item in self._items:
            self.removeItem(item)
        self.alpha, self.beta = [float(a) for a in alpha], [float(b) for b in beta]
        xs = list(range(len(self.alpha)))
        self._items = [
            pg.BarGraphItem(x=[x - 0.2 for x in xs], height=self.alpha, width=0.4, brush=pg.mkBrush(80, 160, 230, 220),
                            name="scale α"),
            pg.BarGraphItem(x=[x + 0.2 for x in xs], height=self.beta, width=0.4, brush=pg.mkBrush(230, 140, 60, 220),
                            name="shift β"),
        ]
        for item in self._items:
            self.addItem(item)
        self.getPlotItem().setTitle("DAFT affine transform")
        self.show()

    def clear_plot(self) -> None:
        for item in self._items:
            self.removeItem(item)
        self._items = []
        self.hide()
