"""What a user's `make run` costs: the default job as one process, wall time and peak RSS, stage by stage.

Runs ``edgecnn run models/defects-mobilenetv2.yaml`` (what `make run` runs after installing) under
``/usr/bin/time -v`` into a fresh run directory, with the bundled data set generated into a fresh folder
first, as on a fresh clone. The whole process's peak RSS and wall time come from ``time -v``; the stage
table (wall seconds, RSS after, peak so far) from the run's own ``edgecnn.log``; the test figures from its
report.json. Issue 35's target: the job <= 300 s and peak RSS <= 3 GB on the 2-core machine.

The machine's own noise is recorded beside it: ``/proc/stat`` is sampled each second during the job (CPU
time the hypervisor gave to other guests, ``steal``, and the share of all CPUs that was busy), and each
training epoch's wall time from the log is listed with the steal inside it, so a slow epoch can be told
apart from a slow machine.

    python benchmarks/make_run.py      # writes benchmarks/results/make_run.json
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "make_run.json"
WORK = ROOT / "export" / "bench-make-run"


def _cpu_times() -> list[int]:
    """The machine's ``cpu`` line of /proc/stat: user nice system idle iowait irq softirq steal (jiffies)."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:9]]


class _Sampler(threading.Thread):
    """(wall time, /proc/stat cpu times) once a second until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, list[int]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), _cpu_times()))
            self.stop.wait(1.0)

    def between(self, t0: float, t1: float) -> dict:
        """Steal seconds (all CPUs) and the busy share of the CPUs between two wall times."""
        inside = [c for t, c in self.samples if t0 <= t <= t1]
        if len(inside) < 2:
            return {"steal_s": None, "busy_share": None}
        d = [b - a for a, b in zip(inside[0], inside[-1])]
        hz = os.sysconf("SC_CLK_TCK")
        return {"steal_s": round(d[7] / hz, 2),
                "busy_share": round(1 - (d[3] + d[4]) / max(sum(d), 1), 3)}


def _epochs(log: str, sampler: _Sampler) -> list[dict]:
    """Each training epoch's wall time (from the log line before it: a phase's first epoch includes its
    set-up and tracing), with the steal inside it."""
    stamps = [(datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp(), phase, int(epoch)) for t, phase, epoch in
              re.findall(r"^(\S+ \S+) INFO edgecnn.train: (phase\d) epoch (\d+)/\d+", log, re.M)]
    return [{"phase": phase, "epoch": epoch, "wall_s": round(t - t0, 2), **sampler.between(t0, t)}
            for (t0, _, _), (t, phase, epoch) in zip(stamps, stamps[1:])]


def main() -> None:
    from edgecnn.runtime.latency import machine_info

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    data, run = WORK / "data", WORK / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}   # as the Makefile exports it
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "edgecnn.cli", "run", "models/defects-mobilenetv2.yaml",
           "--set", f"data.path={data}", "--output", str(run)]
    sampler = _Sampler()
    sampler.start()
    t_start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    sampler.stop.set()
    sampler.join()
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
           "machine_noise": {**sampler.between(t_start, time.time()),
                             "note": "steal: CPU seconds the hypervisor ran other guests on this VM's CPUs"},
           "epochs": _epochs(log, sampler),
           "test": {k: {"accuracy": a["metrics"]["accuracy"], "agreement": a["metrics"].get("agreement"),
                        "p95_ms_1_thread": (a.get("latency", {}).get("1") or {}).get("p95_ms")}
                    for k, a in report["artifacts"].items() if "metrics" in a},
           "foreign_terminal_lines": [ln for ln in (proc.stdout + proc.stderr).splitlines() if foreign.search(ln)],
           "target": {"wall_s": 300, "peak_rss_mb": 3000}}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc[k] for k in ("exit_code", "wall_s", "peak_rss_mb", "cpu_s", "stages", "verdict",
                                          "machine_noise", "epochs")},
                     indent=1))


if __name__ == "__main__":
    main()
