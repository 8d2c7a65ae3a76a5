"""The docs read the registries too: a table that lists formats or runtimes must list exactly them."""
from __future__ import annotations

from pathlib import Path

from edgecnn.export import list_formats
from edgecnn.runtime import runtime_names

README = Path(__file__).resolve().parents[1] / "README.md"


def _table_after(heading: str) -> list[str]:
    """First-column cells (backticks stripped) of the first table under ``heading``."""
    text = README.read_text()
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not set(line) <= set("|- "):
            rows.append(line.split("|")[1].strip().strip("`"))
    return rows[1:]  # the header row


def test_readme_format_table_is_the_registry():
    rows = _table_after("### Formats")
    assert len(rows) == len(set(rows)) and set(rows) == {f.name for f in list_formats()}


def test_readme_runtime_table_is_the_registry():
    rows = _table_after("### Runtimes")
    assert len(rows) == len(set(rows)) and set(rows) == set(runtime_names())
