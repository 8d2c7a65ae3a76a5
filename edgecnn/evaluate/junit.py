"""JUnit XML for `edgecnn check`: one testsuite per budget target, one testcase per budget.

The layout is the common one that Jenkins, GitLab, GitHub test-report actions and Azure read
(``testsuites > testsuite > testcase > failure|error``, counts on both levels, ``time`` in
seconds). Test names leave out the measured value and the limit, so a CI system keeps one history
per budget even when the limit is tightened; both are in the failure message.
"""
from __future__ import annotations

import os
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from edgecnn._io import write_bytes

__all__ = ["to_junit_xml", "write_junit"]


def _testcase_name(r) -> str:
    where = f" @{r.threads}t" + (f" b{r.batch}" if r.batch != 1 else "") if r.timed else ""
    return f"{r.artifact}{where}: {r.budget}"


def to_junit_xml(result) -> bytes:
    """The JUnit XML document of a CheckResult (UTF-8 bytes with an XML declaration)."""
    source = result.source
    suites = ET.Element("testsuites", name="edgecnn check")
    by_target: dict[str, list] = {}
    for r in result.results:
        by_target.setdefault(r.target, []).append(r)
    host = socket.gethostname()
    totals = {"tests": 0, "failures": 0, "errors": 0}

    def suite(name: str, cases: int, failures: int, errors: int) -> ET.Element:
        s = ET.SubElement(suites, "testsuite", name=name, tests=str(cases), failures=str(failures),
                          errors=str(errors), skipped="0", time=f"{result.duration_s:.3f}",
                          timestamp=result.created.rstrip("Z"), hostname=host)
        props = ET.SubElement(s, "properties")
        for k, v in (("run_dir", str(result.run_dir)), ("budgets", source),
                     ("budgets_sha256", result.budgets_sha256), ("cpu", str(result.machine.get("cpu", ""))),
                     ("cores", str(result.machine.get("cores", ""))), ("verdict", result.verdict)):
            ET.SubElement(props, "property", name=k, value=v)
        totals["tests"] += cases
        totals["failures"] += failures
        totals["errors"] += errors
        return s

    for target, rs in by_target.items():
        s = suite(f"edgecnn.check.{target}", len(rs), sum(not r.ok for r in rs), 0)
        for r in rs:
            case = ET.SubElement(s, "testcase", classname=f"edgecnn.check.{target}", name=_testcase_name(r),
                                 time="0")
            if not r.ok:
                f = ET.SubElement(case, "failure", type="BudgetBroken",
                                  message=f"{r.title}: measured {r.measured_text()}")
                f.text = r.message(source) + (f"\n{r.detail}" if r.detail else "")
            out = ET.SubElement(case, "system-out")
            out.text = r.message(source) + (f"\n{r.detail}" if r.detail else "")
    if result.error is not None:
        s = suite("edgecnn.check", 1, 0, 1)
        case = ET.SubElement(s, "testcase", classname="edgecnn.check", name="the check could run", time="0")
        e = ET.SubElement(case, "error", type="CheckError", message=result.error.splitlines()[0])
        e.text = result.error
    if result.warnings:
        first = suites.find("testsuite")
        if first is not None:
            err = ET.SubElement(first, "system-err")
            err.text = "\n".join(result.warnings)
    for k, v in totals.items():
        suites.set(k, str(v))
    suites.set("time", f"{result.duration_s:.3f}")
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(result, path: str | os.PathLike) -> Path:
    """Write the JUnit XML of ``result`` to ``path`` atomically."""
    return write_bytes(path, to_junit_xml(result))
