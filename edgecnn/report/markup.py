"""HTML building blocks of the report pages: the stylesheet, escaping, tables, figures, the page.

Cells and captions passed in are already-escaped HTML; :func:`escape` is the one escaping function.
"""
from __future__ import annotations

import html
from typing import Any

__all__ = ["CSS", "escape", "num", "kb", "table", "figure_html", "note", "page"]

CSS = """
:root { --ok: #1a7f37; --bad: #cf222e; --muted: #57606a; --line: #d0d7de; --bg2: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1f2328;
       margin: 0 auto; padding: 16px 28px 48px; max-width: 1320px; }
h1 { font-size: 24px; margin: 8px 0 2px; } h2 { font-size: 19px; margin: 30px 0 8px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); } h3 { font-size: 15px; margin: 18px 0 6px; }
.sub, .note, figcaption, .muted { color: var(--muted); } .sub { margin: 0 0 10px; }
nav { position: sticky; top: 0; background: white; padding: 6px 0; border-bottom: 1px solid var(--line);
      z-index: 1; font-size: 13px; } nav a { margin-right: 12px; color: #0969da; text-decoration: none; }
.banner { border-radius: 6px; padding: 12px 16px; margin: 14px 0; color: white; }
.banner.pass { background: var(--ok); } .banner.fail { background: var(--bad); } .banner.none { background: #6e7781; }
.banner .head { font-size: 20px; font-weight: 700; letter-spacing: .04em; } .banner code { color: white; }
.banner ul { margin: 6px 0 0; padding-left: 20px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 170px;
        background: var(--bg2); }
.card .v { font-size: 18px; font-weight: 600; } .card .k { font-size: 12px; color: var(--muted); }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: var(--bg2); font-weight: 600; } td.l, th.l { text-align: left; }
tr.front td:first-child { font-weight: 600; } .ok { color: var(--ok); } .bad { color: var(--bad); font-weight: 600; }
.scroll { overflow-x: auto; }
img.plot { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.gallery figure { margin: 0; border: 1px solid var(--line); border-radius: 4px; padding: 6px; background: var(--bg2); }
.gallery img { width: 100%; height: auto; image-rendering: pixelated; display: block; }
.gallery figcaption { font-size: 12px; line-height: 1.3; margin-top: 4px; color: #1f2328; }
.gallery figcaption .muted { overflow-wrap: anywhere; }
td.wrap { white-space: normal; text-align: left; min-width: 140px; }
details { margin: 10px 0; } summary { cursor: pointer; font-weight: 600; }
pre { background: var(--bg2); padding: 10px; border-radius: 4px; overflow-x: auto; font-size: 12px; }
.notes { border-left: 4px solid #bf8700; background: #fff8c5; padding: 8px 12px; margin: 10px 0; }
code { font-size: 12.5px; }
"""


def escape(x: Any) -> str:
    """``x`` as text safe inside HTML elements and attribute values."""
    return html.escape(str(x), quote=True)


def num(x: float) -> str:
    """A measured or allowed budget value: 4 significant digits, thousands plain (10,000 not 1e+04)."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def measured_text(check: dict) -> str:
    """A budget check's measured value with its unit, or "not measured" when nothing measured it."""
    if check.get("measured") is None:
        return "not measured"
    return f"{num(check['measured'])}{unit_text(check.get('unit'))}"


def unmeasured_text(entry: dict) -> str:
    """Why a report.json artifact entry has no metrics: it FAILED while running, or was skipped (and why)."""
    if entry.get("error"):
        return f"FAILED: {entry['error']}"
    return f"skipped: {entry['skipped']}" if entry.get("skipped") else "not evaluated"


def check_verdict(check: dict) -> str:
    """One word for a budget check (report.json's ``budgets.checks``): ok, BROKEN, NOT MEASURED (it fails the
    run) or "not measured (why it does not fail)"."""
    if check.get("measured") is None:
        return "NOT MEASURED" if not check.get("ok") else f"not measured ({check.get('detail') or 'optional'})"
    return "ok" if check.get("ok") else "BROKEN"


def kb(b: float | None) -> str:
    """Bytes as KB with one decimal, or a dash when unknown."""
    return "—" if b is None else f"{b / 1024:,.1f}"


def table(head: list[str], rows: list[list[str]], left: int = 1, classes: list[str] | None = None,
          wrap: tuple[int, ...] = ()) -> str:
    """An HTML table; cells are already-escaped HTML; the first ``left`` columns are left-aligned,
    the columns in ``wrap`` may wrap."""
    th = "".join(f'<th class="l">{h}</th>' if i < left or i in wrap or i - len(head) in wrap else f"<th>{h}</th>"
                 for i, h in enumerate(head))
    body = []
    for r_i, row in enumerate(rows):
        cls = f' class="{classes[r_i]}"' if classes and classes[r_i] else ""
        tds = "".join(f'<td class="wrap">{c}</td>' if i in wrap or i - len(row) in wrap else
                      f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{tds}</tr>")
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def figure_html(src: str, alt: str, caption: str = "") -> str:
    """An <img> of a figure in the run directory (``src`` relative to the page) with its caption."""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure style="margin:8px 0"><img class="plot" src="{escape(src)}" alt="{escape(alt)}">{cap}</figure>'


def page(title: str, body: str) -> str:
    """A complete self-contained HTML document (inline CSS, no script, no network)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")




def note(text: str) -> str:
    """A muted paragraph that says why something is not shown (``text`` is plain, escaped here)."""
    return f'<p class="note">{escape(text)}</p>'


def unit_text(unit: str | None) -> str:
    """A budget figure's unit as it follows a number: " ms", " KiB", or nothing for a fraction."""
    return f" {unit}" if unit else ""
