"""The default job (`make run`'s recipe, models/defects-mobilenetv2.yaml) stage by stage: wall time and peak RSS.

A fresh run directory gets the resolved recipe, then ``edgecnn train``, ``compress``, ``export`` and
``evaluate`` run on it, each in its own process (``os.wait4``'s ``ru_maxrss``), so each stage's figures
are its own; the bundled data set is generated first when missing (not timed). The run's test top-1
and int8 figures come from its report.json. Issue 19's target: the whole job <= 5 min, peak RSS <= 3 GB.

    python benchmarks/default_job.py                  # writes benchmarks/results/default_job.json
    python benchmarks/default_job.py --reuse-train    # the later stages again on the last run's model

Runs go to export/bench-default-job/ (deleted first: every stage starts cold). ``--reuse-train`` keeps
the last run's trained model and its train figures (marked ``"reused": true``), deletes the run's
caches (decoded splits, chooser candidates) and reruns compress, export and evaluate with ``--force``:
the loop for work on the stages after training.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import STAGES, measured  # noqa: E402  (the same per-process measurement)

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from edgecnn._io import write_json, write_text
    from edgecnn.config import dump_recipe, load_recipe
    from edgecnn.runtime.latency import machine_info

    recipe = load_recipe(ROOT / "models" / "defects-mobilenetv2.yaml")
    data = Path(recipe.data.path if Path(recipe.data.path).is_absolute() else ROOT / recipe.data.path)
    edgecnn = [sys.executable, "-m", "edgecnn.cli"]
    if not data.exists():
        measured([*edgecnn, "data", "make-defects", str(data)], ROOT / "export" / "bench-default-job.log")
    recipe.data.path = str(data)
    run = ROOT / "export" / "bench-default-job"
    out_json = ROOT / "benchmarks" / "results" / "default_job.json"
    log = ROOT / "export" / "bench-default-job.log"
    stages, again = {}, []
    if "--reuse-train" in sys.argv[1:]:
        for cache in ("splits", "compress"):     # decoded splits and chooser candidates: a fresh run has neither
            shutil.rmtree(run / cache, ignore_errors=True)
        stages["train"] = {**json.loads(out_json.read_text())["stages"]["train"], "reused": True}
        again = ["--force"]
    else:
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        write_text(run / "recipe.yaml", dump_recipe(recipe))
        log.unlink(missing_ok=True)
    for stage in STAGES:
        if stage in stages:
            continue
        print(f"[default job] {stage}", flush=True)
        stages[stage] = measured([*edgecnn, stage, str(run), *again], log)
        print(f"  {stages[stage]}", flush=True)
    report = json.loads((run / "report.json").read_text())
    figures = {n: {k: a["metrics"][k] for k in ("accuracy", "agreement", "accuracy_drop") if k in a["metrics"]}
               for n, a in report["artifacts"].items() if "metrics" in a}
    out = {"machine": machine_info(), "cpus": os.cpu_count(), "recipe": "models/defects-mobilenetv2.yaml",
           "stages": stages, "total_wall_s": round(sum(s["wall_s"] for s in stages.values()), 1),
           "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values()), "verdict": report.get("verdict"),
           "test": figures, "target": {"total_wall_s": 300, "peak_rss_mb": 3072}}
    write_json(out_json, out)
    print(json.dumps({k: out[k] for k in ("stages", "total_wall_s", "peak_rss_mb", "verdict")}, indent=1))


if __name__ == "__main__":
    main()
