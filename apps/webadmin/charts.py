"""The dashboard's mail-flow chart, laid out on the server as SVG geometry.

No inline style (the CSP forbids it): the template draws polylines from the
points computed here, and the stylesheet colours them by class. The same
figures go into a table for screen readers and for anyone who wants numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from apps.store.trace import FLOW_KINDS

LABELS = {"received": "Received", "delivered": "Delivered locally", "junked": "Junked",
          "sent": "Sent", "deferred": "Deferred", "bounced": "Bounced"}

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 26  # room for the axes' labels


@dataclass(frozen=True)
class Series:
    kind: str
    label: str
    values: list[int]
    points: str  # SVG polyline points
    total: int


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class FlowChart:
    title: str
    bucket_labels: list[str]
    series: list[Series]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    baseline: int = HEIGHT - BOTTOM

    @property
    def rows(self) -> list[tuple[str, list[int]]]:
        """Per bucket, the value of each series: the table alternative."""
        return [(label, [s.values[i] for s in self.series])
                for i, label in enumerate(self.bucket_labels)]


def _nice_ceiling(value: int) -> int:
    """1, 2, 5, 10, 20, 50… at or above ``value``: round axis labels."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def flow_chart(
    title: str, counts: dict[tuple[int, str], int], *, first_hour: int, buckets: int,
    hours_per_bucket: int, label: Callable[[int], str], tick_every: int,
) -> FlowChart:
    """``counts`` is (hour, kind) -> messages; bucket ``i`` covers the hours
    from ``first_hour + i * hours_per_bucket``. ``label`` names a bucket from
    its first hour."""
    values = {kind: [0] * buckets for kind in FLOW_KINDS}
    for (hour, kind), count in counts.items():
        index = (hour - first_hour) // hours_per_bucket
        if kind in values and 0 <= index < buckets:
            values[kind][index] += count
    top = _nice_ceiling(max((v for series in values.values() for v in series), default=0))
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(index: int) -> float:
        return round(LEFT + plot_width * index / max(buckets - 1, 1), 1)

    def y(value: int) -> float:
        return round(TOP + plot_height * (1 - value / top), 1)

    series = [Series(kind, LABELS[kind], values[kind],
                     " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(values[kind])),
                     sum(values[kind])) for kind in FLOW_KINDS]
    bucket_labels = [label(first_hour + i * hours_per_bucket) for i in range(buckets)]
    return FlowChart(
        title=title, bucket_labels=bucket_labels, series=series,
        y_ticks=[Tick(y(v), str(v)) for v in sorted({0, top // 2, top})],
        x_ticks=[Tick(x(i), bucket_labels[i]) for i in range(0, buckets, tick_every)])
