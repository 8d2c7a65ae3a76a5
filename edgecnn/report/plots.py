"""The report's PNG figures, drawn with matplotlib's object API (no pyplot, so no global state).

Each function takes plain numbers (from report.json / history.json) and a path, writes one PNG
and returns the path. Nothing here reads a run directory: the sections do, which keeps these
easy to test and to reuse (``compare_runs`` uses :func:`tradeoff_plot` over several runs). The
image figures (gallery thumbnails, Grad-CAM overlays) are drawn by the evaluate stage.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgecnn.report.pareto import PARETO_DEFINITION, TradeoffPoint, pareto_front

__all__ = ["tradeoff_plot", "confusion_plot", "training_plot", "figure", "save_figure"]

DPI = 100
_GOOD, _BAD, _FRONT = "#1a7f37", "#cf222e", "#0550ae"
_PALETTE = ("#0550ae", "#bc4c00", "#1a7f37", "#8250df", "#cf222e", "#116329", "#953800", "#6e7781")


def figure(width_in: float, height_in: float):
    """A matplotlib Figure on its own Agg canvas (no pyplot state), constrained layout, at :data:`DPI`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


# ----------------------------------------------------------------------------------------------
# Accuracy vs latency vs size


def _marker_area(nbytes: np.ndarray) -> np.ndarray:
    """Marker area (pt^2) proportional to file size, scaled so the largest is 900."""
    return np.maximum(900.0 * nbytes / max(1, nbytes.max()), 25.0)


def _place_labels(ax, fig, xs, ys, texts, colors, sizes, obstacles=()) -> None:
    """Label points, trying rings of offsets so labels overlap neither each other, nor the markers,
    nor ``obstacles`` (display-space boxes such as the legend); a thin leader line ties each label
    to its point."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px_per_pt = fig.dpi / 72.0
    centres = ax.transData.transform(np.column_stack([xs, ys]))
    placed = list(obstacles)
    for (cx, cy), area in zip(centres, sizes):  # marker discs as boxes
        r = np.sqrt(area) / 2 * px_per_pt
        placed.append(Bbox([[cx - r, cy - r], [cx + r, cy + r]]))
    offsets = []  # rings of candidate positions around the point, nearest first
    for radius in (9, 16, 24, 34, 46, 60, 76):
        for ang in (45, -45, 135, -135, 90, -90, 0, 180, 22, -22, 158, -158, 68, -68, 112, -112):
            dx, dy = radius * np.cos(np.radians(ang)), radius * np.sin(np.radians(ang))
            ha = "left" if dx > 1 else "right" if dx < -1 else "center"
            va = "bottom" if dy > 1 else "top" if dy < -1 else "center"
            offsets.append((dx, dy, ha, va))
    style = {"fontsize": 8.5, "bbox": {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}}
    for i in np.argsort(-np.asarray(ys)):
        choice = offsets[0]
        for dx, dy, ha, va in offsets:
            probe = ax.annotate(texts[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                                **style)
            box = probe.get_window_extent(renderer).expanded(1.04, 1.08)
            probe.remove()
            fits = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if fits and not any(box.overlaps(b) for b in placed):
                choice = (dx, dy, ha, va)
                placed.append(box)
                break
        dx, dy, ha, va = choice
        ax.annotate(texts[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                    color=colors[i], arrowprops={"arrowstyle": "-", "color": colors[i], "lw": 0.8, "alpha": 0.9,
                                                 "shrinkA": 0, "shrinkB": 2}, **style)


def tradeoff_plot(points: Sequence[TradeoffPoint], path: str | os.PathLike, *, title: str = "",
                  xlabel: str = "latency p50 at 1 thread (ms, log scale)") -> Path:
    """Accuracy (y) vs latency (x) with marker area proportional to file size; the Pareto front
    (latency vs accuracy) is drawn as a step line and its points are labelled in bold.

    Points of different ``group`` (e.g. runs) get different colours.
    """
    fig = figure(9.5, 5.6)
    ax = fig.add_subplot()
    if not points:
        ax.text(0.5, 0.5, "no artifact has a latency measurement", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return save_figure(fig, path)
    groups = list(dict.fromkeys(p.group for p in points))
    color_of = {g: _PALETTE[i % len(_PALETTE)] for i, g in enumerate(groups)}
    xs = np.array([p.latency_ms for p in points])
    ys = np.array([p.accuracy for p in points])
    sizes = _marker_area(np.array([p.bytes for p in points], dtype=float))
    front = pareto_front(points)
    for g in groups:
        idx = [i for i, p in enumerate(points) if p.group == g]
        hollow = [i for i in idx if points[i].note]
        solid = [i for i in idx if not points[i].note]
        ax.scatter(xs[solid], ys[solid], s=sizes[solid], color=color_of[g], alpha=0.55, edgecolors="black",
                   linewidths=0.6, label=g or None, zorder=3)
        if hollow:
            ax.scatter(xs[hollow], ys[hollow], s=sizes[hollow], facecolors="none", edgecolors=color_of[g],
                       linewidths=1.4, linestyle="--", zorder=3)
        for i in idx:  # the accuracy's 95 % interval as a thin vertical bar
            if points[i].ci95:
                lo, hi = points[i].ci95
                ax.plot([xs[i], xs[i]], [lo, hi], color=color_of[g], lw=0.8, alpha=0.5, zorder=2)
    fx, fy = xs[front], ys[front]
    ax.step(fx, fy, where="post", color=_FRONT, lw=1.2, ls="--", alpha=0.8, zorder=1)
    ax.scatter(fx, fy, s=18, color=_FRONT, marker="D", zorder=4)
    ax.set_xscale("log")
    lo_x, hi_x = xs.min(), xs.max()
    pad = max(1.25, (hi_x / lo_x) ** 0.12) if lo_x > 0 else 1.25
    ax.set_xlim(lo_x / pad, hi_x * pad)
    y_lo = min([ys.min()] + [p.ci95[0] for p in points if p.ci95])
    y_hi = max([ys.max()] + [p.ci95[1] for p in points if p.ci95])
    span = max(y_hi - y_lo, 0.02)
    ax.set_ylim(max(0.0, y_lo - 0.15 * span), min(1.0, y_hi + 0.15 * span) + 0.02 * span)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=np.arange(1, 10)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy (test split; bars: 95 % interval)")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    if title:
        ax.set_title(title, fontsize=11)
    front_set = set(front)
    texts = [("★ " if i in front_set else "") + p.label + (f" ({p.note})" if p.note else "")
             for i, p in enumerate(points)]
    colors = [color_of[p.group] for p in points]
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", ms=8, color=color_of[g], alpha=0.7, mec="black", label=g)
               for g in groups if g]
    handles.append(Line2D([], [], color=_FRONT, ls="--", marker="D", ms=4,
                          label=f"Pareto front ({PARETO_DEFINITION})"))
    legend = ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)
    big = max(points, key=lambda p: p.bytes)
    note = ax.text(0.01, 0.01, f"marker area ∝ file size (largest: {big.label}, {big.bytes / 1024:,.0f} KB)  "
                   "★ = on the Pareto front", transform=ax.transAxes, fontsize=8, color="#555")
    fig.canvas.draw()  # fixes the layout, so the label boxes measured next are final
    renderer = fig.canvas.get_renderer()
    _place_labels(ax, fig, xs, ys, texts, colors, sizes,
                  obstacles=[legend.get_window_extent(renderer), note.get_window_extent(renderer)])
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# Confusion matrices


def confusion_plot(matrices: dict[str, Sequence[Sequence[int]]], classes: Sequence[str],
                   path: str | os.PathLike, *, subtitles: dict[str, str] | None = None) -> Path:
    """Confusion matrices side by side (rows: true, columns: predicted), coloured by row share,
    annotated with counts."""
    names = list(matrices)
    n = len(names)
    k = len(classes)
    cell = 0.42 if k <= 10 else 0.25
    side = max(2.6, cell * k + 1.3)
    fig = figure(min(15.5, side * n + 0.4), side + 0.6)
    axes = fig.subplots(1, n, squeeze=False)[0]
    show_counts = k <= 15
    for ax, name in zip(axes, names):
        cm = np.asarray(matrices[name], dtype=float)
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        if show_counts:
            for i in range(k):
                for j in range(k):
                    if cm[i, j]:
                        ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8 if k <= 8 else 6,
                                color="white" if share[i, j] > 0.55 else ("#cf222e" if i != j else "black"))
        ax.set_xticks(range(k), classes, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center",
                      fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        sub = (subtitles or {}).get(name, "")
        ax.set_title(name + (f"\n{sub}" if sub else ""), fontsize=9)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# Training curves


def training_plot(phases: Sequence[dict], path: str | os.PathLike) -> Path:
    """Loss, accuracy and learning rate per epoch, every phase on one epoch axis, with a dashed
    line where one phase ends and the next begins."""
    fig = figure(12, 3.6)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    start = 0
    boundaries = []
    series: dict[str, list[tuple[int, float]]] = {k: [] for k in ("loss", "val_loss", "accuracy", "val_accuracy",
                                                                  "lr")}
    spans = []
    for ph in phases:
        n = max((len(v) for k, v in ph.items() if k in series and isinstance(v, list)), default=0)
        for key in series:
            values = ph.get(key)
            if key == "lr" and not isinstance(values, list) and values is not None:
                values = [float(values)] * n  # an older history: the phase's constant lr
            for e, v in enumerate(values or []):
                series[key].append((start + e + 1, float(v)))
        spans.append((start, start + n, ph.get("name", "")))
        start += n
        boundaries.append(start)
    style = {"loss": ("train", "-", _PALETTE[0]), "val_loss": ("val", "--", _PALETTE[1]),
             "accuracy": ("train", "-", _PALETTE[0]), "val_accuracy": ("val", "--", _PALETTE[1]),
             "lr": ("learning rate", "-", _PALETTE[3])}
    for ax, keys, ylabel in ((ax_loss, ("loss", "val_loss"), "loss"),
                             (ax_acc, ("accuracy", "val_accuracy"), "accuracy"), (ax_lr, ("lr",), "learning rate")):
        for key in keys:
            pts = series[key]
            if pts:
                label, ls, color = style[key]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ls=ls, marker="o", ms=3, color=color, label=label)
        for b in boundaries[:-1]:
            ax.axvline(b + 0.5, color="#888", ls=":", lw=1.2)
        for s, e, name in spans:
            if e > s and name:
                ax.text((s + e) / 2 + 0.5, 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                        fontsize=8, color="#555")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if start:
            ax.set_xlim(0.5, start + 0.5)
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not any(series[k] for k in keys):
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="#888")
        elif key != "lr":
            ax.legend(fontsize=8)
    if series["lr"] and min(v for _, v in series["lr"]) > 0:
        ax_lr.set_yscale("log")
    return save_figure(fig, path)
