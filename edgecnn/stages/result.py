"""What a run of any task returns: its run directory, report and budget verdict."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RunResult"]


@dataclass
class RunResult:
    """The outcome of a run (or of its evaluate stage): ``ok`` is False when a budget broke, an artifact
    failed while running, or an int8 format was withheld."""

    run_dir: Path
    report: dict | None = None
    violations: list = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[dict]:
        """Artifacts that failed while running (report.json's ``errors``): each fails the run like a broken budget."""
        return list((self.report or {}).get("errors", []))

    @property
    def withheld(self) -> dict[str, dict]:
        """int8 formats no chooser route held (report.json's ``withheld``): not shipped, and the run fails."""
        return dict((self.report or {}).get("withheld", {}))

    @property
    def ok(self) -> bool:
        return not self.violations and not self.errors and not self.withheld
