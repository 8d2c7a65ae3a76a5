"""The report's sections: a registry, so that adding a section to report.html is one function.

A section is a function of a :class:`ReportContext` that returns the section's HTML (its title,
anchor and place in the navigation bar come from :func:`register_section`), or ``None`` to leave
the section out of the page (e.g. "Compression" on a run without a compress stage). A section
only reads ``ctx.run`` (the run directory's files) and may draw figures into ``ctx.plots_dir``.

Example:
    >>> from edgecnn.report import ReportContext, register_section
    >>> @register_section("classes", order=65, title="Classes")   # doctest: +SKIP
    ... def classes_section(ctx: ReportContext) -> str:
    ...     return "<p>" + ", ".join(ctx.run.classes) + "</p>"
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from edgecnn.errors import EdgecnnError
from edgecnn.report.markup import escape, note
from edgecnn.report.pareto import TradeoffPoint, pareto_front
from edgecnn.report.run_files import RunFiles, latency_p50, short_name

__all__ = ["ReportContext", "Section", "register_section", "unregister_section", "list_sections",
           "render_sections", "PLOTS_DIR"]

log = logging.getLogger("edgecnn.report")
PLOTS_DIR = "plots"
"""Folder of the run directory holding the figures the sections draw (replaced on each render)."""


@dataclass
class ReportContext:
    """What a section reads: the run's files, and where its figures go.

    Attributes:
        run: the run directory's files.
        plots_dir: the folder a section writes its PNGs into; it becomes ``RUN_DIR/plots/`` once
            every section has drawn, so a section links a figure as ``plots/<name>``
            (:meth:`plot_path` gives both).
        notes: sentences for the Notes box at the top of the page (from the findings).
    """

    run: RunFiles
    plots_dir: Path
    notes: list[str] = field(default_factory=list)

    def plot_path(self, filename: str) -> tuple[Path, str]:
        """(where to write the figure now, the link to put in the HTML)."""
        return self.plots_dir / filename, f"{PLOTS_DIR}/{filename}"

    @cached_property
    def tradeoff_points(self) -> list[TradeoffPoint]:
        """Every evaluated artifact with a latency and an accuracy, labelled by its short name."""
        return tradeoff_points(self.run)

    @cached_property
    def front(self) -> set[str]:
        """Short names of the artifacts on the Pareto front (:func:`~edgecnn.report.pareto.pareto_front`)."""
        pts = self.tradeoff_points
        return {pts[i].label for i in pareto_front(pts)}


def tradeoff_points(run: RunFiles, group: str = "") -> list[TradeoffPoint]:
    """The run's artifacts as points of the accuracy-vs-latency plane (those with both figures)."""
    points = []
    for name, art in run.measured().items():
        p50, why = latency_p50(art)
        acc = art.get("metrics", {}).get("accuracy")
        if p50 is None or acc is None:
            continue
        ci = art["metrics"].get("accuracy_ci95")
        points.append(TradeoffPoint(short_name(name), p50, float(acc), int(art.get("bytes", 0)), group=group,
                                    note=why, ci95=tuple(ci) if ci else None))
    return points


@dataclass(frozen=True)
class Section:
    """One registered section: its anchor ``name``, heading ``title``, navigation label and place."""

    name: str
    title: str
    order: int
    nav: str
    render: Callable[[ReportContext], str | None]
    tasks: tuple[str, ...] | None = None


_SECTIONS: dict[str, Section] = {}


def register_section(name: str, order: int, *, title: str, nav: str | None = None,
                     tasks: tuple[str, ...] | None = None
                     ) -> Callable[[Callable[[ReportContext], str | None]], Callable[[ReportContext], str | None]]:
    """Decorator: add a section to report.html.

    Args:
        name: the section's anchor (``#name``); unique.
        order: its place on the page, top to bottom (the built-in sections use multiples of 10).
        title: its heading.
        nav: its label in the navigation bar (default: ``title``).
        tasks: the recipe tasks (``RunFiles.task``) whose reports show it; None = every task.

    Returns:
        The decorator, which returns the function unchanged.

    Raises:
        EdgecnnError: ``name`` is already registered.
    """
    def add(fn: Callable[[ReportContext], str | None]) -> Callable[[ReportContext], str | None]:
        if name in _SECTIONS and _SECTIONS[name].render is not fn:
            raise EdgecnnError(f"register_section: a section named {name!r} is already registered "
                               f"({_SECTIONS[name].render.__module__}.{_SECTIONS[name].render.__qualname__}); "
                               f"pick another name or unregister_section({name!r}) first.")
        _SECTIONS[name] = Section(name, title, order, nav or title, fn, tasks)
        return fn

    return add


def unregister_section(name: str) -> None:
    """Remove a section (no error when it is not registered)."""
    _SECTIONS.pop(name, None)


def list_sections() -> list[Section]:
    """The registered sections in page order."""
    return sorted(_SECTIONS.values(), key=lambda s: (s.order, s.name))


def render_sections(ctx: ReportContext) -> list[tuple[Section, str]]:
    """Each section's ``<section>`` element, in page order; the sections that returned None are left out.

    A section that fails (a malformed file, a bug) becomes a note saying so: the rest of the page
    is still written.
    """
    out = []
    for s in list_sections():
        if s.tasks is not None and ctx.run.task not in s.tasks:
            continue
        try:
            body = s.render(ctx)
        except Exception as e:  # one section's failure must not cost the whole report
            log.warning("report section %r failed: %s: %s", s.name, type(e).__name__, e, exc_info=True)
            body = note(f"This section could not be drawn ({type(e).__name__}: {e}).")
        if body is None:
            continue
        out.append((s, f'<section id="{escape(s.name)}"><h2>{escape(s.title)}</h2>{body}</section>'))
    return out
