"""The one Pareto front of the report: accuracy (higher is better) against latency (lower is better).

Every ★ on the report — the artifacts table, the trade-off plot, the compression chooser's
candidate table, report.md and the comparison page — comes from :func:`pareto_front`, so the
same artifact is never starred by one table and not by another. File size is shown (marker area,
a column) but is not an objective: it is a budget, checked by ``budgets``.

Example:
    >>> pts = [TradeoffPoint("fp32", 10.0, 0.95, 4000), TradeoffPoint("int8", 3.0, 0.94, 1000),
    ...        TradeoffPoint("slow-worse", 12.0, 0.90, 900)]
    >>> [pts[i].label for i in pareto_front(pts)]
    ['int8', 'fp32']
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["TradeoffPoint", "pareto_front", "latency_or_inf", "PARETO_DEFINITION"]

PARETO_DEFINITION = "no other artifact is both faster and more accurate"
"""The sentence every caption and legend uses for the front."""


@dataclass(frozen=True)
class TradeoffPoint:
    """One artifact (or chooser candidate) on the accuracy-vs-latency plane.

    Attributes:
        label: the name shown on the plot and matched against table rows.
        latency_ms: p50 latency; ``math.inf`` when not measured (on the front only if the most accurate).
        accuracy: top-1 accuracy in [0, 1].
        bytes: file size, drawn as marker area.
        group: the run, on a comparison of several runs.
        note: e.g. "timed at 2 threads" when no 1-thread measurement exists.
        ci95: the accuracy's 95 % interval.
    """

    label: str
    latency_ms: float
    accuracy: float
    bytes: int
    group: str = ""
    note: str = ""
    ci95: tuple[float, float] | None = None


def pareto_front(points: Sequence[TradeoffPoint]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher).

    Args:
        points: the candidates; equal points are all on the front.

    Returns:
        The indices of the front, ordered by latency (then by accuracy, highest first).
    """
    def beats(q: TradeoffPoint, p: TradeoffPoint) -> bool:
        return (q.latency_ms <= p.latency_ms and q.accuracy >= p.accuracy
                and (q.latency_ms < p.latency_ms or q.accuracy > p.accuracy))

    front = [i for i, p in enumerate(points) if not any(beats(q, p) for q in points)]
    return sorted(front, key=lambda i: (points[i].latency_ms, -points[i].accuracy))


def latency_or_inf(ms: float | None) -> float:
    """A latency that may be unmeasured, as a number :func:`pareto_front` can compare."""
    return math.inf if ms is None else float(ms)
