"""What a user's `make run` costs: the default job as one process, wall time and peak RSS, stage by stage.

Runs ``edgecnn run models/defects-mobilenetv2.yaml`` (what `make run` runs after installing) under
``/usr/bin/time -v`` into a fresh run directory, with the bundled data set generated into a fresh folder
first, as on a fresh clone. The whole process's peak RSS and wall time come from ``time -v``; the stage
table (wall seconds, RSS after, peak so far) from the run's own ``edgecnn.log``; the test figures from its
report.json. Issue 35's target: the job <= 300 s and peak RSS <= 3 GB on the 2-core machine.

    python benchmarks/make_run.py      # writes benchmarks/results/make_run.json
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "make_run.json"
WORK = ROOT / "export" / "bench-make-run"


def main() -> None:
    from edgecnn.runtime.latency import machine_info

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    data, run = WORK / "data", WORK / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}   # as the Makefile exports it
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "edgecnn.cli", "run", "models/defects-mobilenetv2.yaml",
           "--set", f"data.path={data}", "--output", str(run)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    timing = dict(re.findall(r"^\s*(Maximum resident set size \(kbytes\)|Elapsed \(wall clock\) time "
                             r"\(h:mm:ss or m:ss\)|User time \(seconds\)|System time \(seconds\)): (.+)$",
                             proc.stderr, re.M))
    minutes, seconds = timing["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")[-2:]
    log = (run / "edgecnn.log").read_text() if (run / "edgecnn.log").is_file() else ""   # older code: no log
    stages = {name: {"wall_s": float(s), "rss_after_mb": int(after), "peak_so_far_mb": int(peak)}
              for name, s, after, peak in
              re.findall(r"stage (\w+)\s+([\d.]+) s\s+RSS\s+(\d+) MB after, peak\s+(\d+) MB", log)}
    report = json.loads((run / "report.json").read_text())
    # what issue 35 found on the terminal before: TF/absl C++ logging, the converter's and XNNPACK's lines, ORT's prints
    foreign = re.compile(r"^[IWEF]\d{4} |absl|XNNPACK|fully_quantize|Collecting tensor data|cuInit|oneDNN|NodeDef")
    doc = {"machine": machine_info(), "command": " ".join(cmd[2:]), "exit_code": proc.returncode,
           "wall_s": round(int(minutes) * 60 + float(seconds), 1),
           "peak_rss_mb": round(int(timing["Maximum resident set size (kbytes)"]) * 1024 / 1e6),
           "cpu_s": round(float(timing["User time (seconds)"]) + float(timing["System time (seconds)"]), 1),
           "stages": stages, "verdict": report.get("verdict"),
           "test": {k: {"accuracy": a["metrics"]["accuracy"], "agreement": a["metrics"].get("agreement"),
                        "p95_ms_1_thread": (a.get("latency", {}).get("1") or {}).get("p95_ms")}
                    for k, a in report["artifacts"].items() if "metrics" in a},
           "foreign_terminal_lines": [ln for ln in (proc.stdout + proc.stderr).splitlines() if foreign.search(ln)],
           "target": {"wall_s": 300, "peak_rss_mb": 3000}}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc[k] for k in ("exit_code", "wall_s", "peak_rss_mb", "cpu_s", "stages", "verdict")},
                     indent=1))


if __name__ == "__main__":
    main()
