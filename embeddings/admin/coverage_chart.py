"""The coverage chart, drawn server-side as SVG geometry for the template: no JavaScript,
nothing fetched from the internet."""

from dataclasses import dataclass
from datetime import date

from embeddings.coverage import DayCoverage


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: date
    embedded: int
    coverage_percent: float | None


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    bars: list[Bar]
    points: list[tuple[float, float]]  # coverage % per day that had clips

    @property
    def line(self) -> str:
        return " ".join(f"{x},{y}" for x, y in self.points)

    max_embedded: int
    day_labels: list[tuple[float, str]]

    @property
    def plot_right(self) -> int:
        return self.width - self.right

    @property
    def plot_bottom(self) -> int:
        return self.height - self.bottom

    @property
    def middle(self) -> float:
        return (self.top + self.plot_bottom) / 2


def coverage_chart(days: list[DayCoverage], *, width: int = 760, height: int = 240) -> Chart:
    """Geometry of an SVG chart: bars of vectors made per day on the left axis, coverage % as
    a line on the right axis (0-100). The template only places what is computed here."""
    left, right, top, bottom = 56, 48, 14, 30
    plot_width, plot_height = width - left - right, height - top - bottom
    slot = plot_width / max(len(days), 1)
    peak = max((d.embedded for d in days), default=0)
    scale = _nice_ceiling(peak)
    bars, points, labels = [], [], []
    for i, day in enumerate(days):
        bar_height = plot_height * day.embedded / scale if scale else 0
        x = left + i * slot
        bars.append(
            Bar(
                x=round(x + slot * 0.15, 1),
                y=round(top + plot_height - bar_height, 1),
                width=round(slot * 0.7, 1),
                height=round(bar_height, 1),
                day=day.day,
                embedded=day.embedded,
                coverage_percent=day.coverage_percent,
            )
        )
        if day.coverage_percent is not None:  # None: no live clip existed yet
            y = top + plot_height * (1 - day.coverage_percent / 100)
            points.append((round(x + slot / 2, 1), round(y, 1)))
        if (len(days) - 1 - i) % 7 == 0:  # weekly, ending today
            labels.append((round(x + slot / 2, 1), day.day.strftime("%b %-d")))
    return Chart(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        bars=bars,
        points=points,
        max_embedded=scale,
        day_labels=labels,
    )


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (0 stays 0)."""
    if value <= 0:
        return 0
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10
