"""A tiny live line plot (training loss and validation AP) drawn with QPainter.

No plotting library needed; it redraws on every new point and stays cheap
because it only keeps a few thousand points.
"""

from __future__ import annotations

from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

MAX_POINTS = 4000


class LivePlot(QWidget):
    """Training loss (left axis, orange) and validation AP@0.5 (right axis, 0-1, cyan)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.loss: list[tuple[float, float]] = []
        self.score: list[tuple[float, float]] = []

    def clear(self) -> None:
        self.loss.clear()
        self.score.clear()
        self.update()

    def add_loss(self, step: float, value: float) -> None:
        self.loss.append((step, value))
        if len(self.loss) > MAX_POINTS:
            self.loss = self.loss[::2]
        self.update()

    @staticmethod
    def score_axis() -> tuple[str, str]:
        """The right axis' top and bottom: AP runs from 0 to 1 whatever was measured."""
        return "1.0", "0"

    def score_legend(self) -> str:
        """The last and best validation AP@0.5, written inside the plot."""
        values = [v for _, v in self.score]
        return f"AP@0.5 last {values[-1]:.2f}, best {max(values):.2f}" if values else ""

    def add_score(self, step: float, value: float) -> None:
        self.score.append((step, value))
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        m = 30
        p.fillRect(self.rect(), QColor(38, 41, 48))
        p.setPen(QPen(QColor(120, 120, 120)))
        p.drawRect(m, 8, w - 2 * m, h - m - 8)
        steps = [s for s, _ in self.loss] + [s for s, _ in self.score]
        if not steps:
            p.drawText(m + 6, h // 2, "loss (orange) and validation AP@0.5 (cyan)")
            p.end()
            return
        s0, s1 = min(steps), max(max(steps), min(steps) + 1)

        def x_of(s: float) -> float:
            return m + (s - s0) / (s1 - s0) * (w - 2 * m)

        def series(points, lo, hi, colour) -> None:
            if not points:
                return
            span = hi - lo if hi > lo else 1.0
            pen = QPen(QColor(colour))
            pen.setWidth(2)
            p.setPen(pen)
            pts = [QPointF(x_of(s), 8 + (1 - (v - lo) / span) * (h - m - 16)) for s, v in points]
            for a, b in zip(pts, pts[1:]):
                p.drawLine(a, b)
            if len(pts) == 1:
                p.drawEllipse(pts[0], 2, 2)

        if self.loss:
            values = [v for _, v in self.loss]
            series(self.loss, 0.0, max(values), "#ff9f43")
            p.setPen(QColor("#ff9f43"))
            p.drawText(2, 18, f"{max(values):.2f}")
            p.drawText(2, h - m, "0")
        series(self.score, 0.0, 1.0, "#48dbfb")
        p.setPen(QColor("#48dbfb"))
        top, bottom = self.score_axis()
        p.drawText(w - m + 3, 18, top)
        p.drawText(w - m + 3, h - m, bottom)
        if self.score:
            # Right-aligned inside the frame: it must not run into the axis' labels.
            legend = self.score_legend()
            p.drawText(w - m - 4 - p.fontMetrics().horizontalAdvance(legend), 24, legend)
        p.setPen(QColor(200, 200, 200))
        p.drawText(m, h - 8, f"step {int(s0)}")
        p.drawText(w - m - 70, h - 8, f"step {int(s1)}")
        p.end()
