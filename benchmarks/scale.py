"""How the pipeline's cost grows with the data: wall time and peak RSS per stage at 1x, 4x and 16x the
bundled defect set (and one 224 px point), same model and input size.

Each point generates the set (``edgecnn data make-defects``), writes a run directory's recipe.yaml, then
runs ``edgecnn train``, ``compress``, ``export`` and ``evaluate`` on it, each in its own process, so each
stage's wall time and peak RSS (``os.wait4``'s ``ru_maxrss`` of that process) are its own. The model is
tiny (dsconv, alpha 0.5, 7 blocks, 1 epoch, from scratch) so the data, not the model, sets the cost.
The training cache is given a stated budget (``data.cache_memory_mb``, ``--cache-mb``): below it a split
is cached in memory, above it on disk, so peak memory stops growing with the data at that budget.

    python benchmarks/scale.py                       # 1x, 4x, 16x at 64 px and 1x at 224 px
    python benchmarks/scale.py --sizes 1x,4x         # a subset (the other points are kept from the last run)
    python benchmarks/scale.py --sizes ""            # only recompute the ratios of the stored points

Writes ``benchmarks/results/scale.json``: the machine, threads, per point and stage the wall seconds,
peak RSS MB, the images the stage went over and seconds per 1,000 of them, and the ratios 4x / 1x,
16x / 1x and 16x / 4x.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE_PER_CLASS = 450          # the bundled set: 4 classes x 450 = 1,800 images, split 0.6 / 0.2 / 0.2
POINTS = {"1x": (1, 64), "4x": (4, 64), "16x": (16, 64), "224px": (1, 224)}   # name: (multiple, image side)
STAGES = ("train", "compress", "export", "evaluate")


def recipe(name: str, data: Path, size: int, cache_mb: float) -> dict:
    """The benchmark's recipe: tiny model, one epoch, one int8 route, few latency runs."""
    return {
        "name": name,
        "data": {"path": str(data), "batch_size": 32, "cache": "auto", "cache_memory_mb": cache_mb,
                 "augment": {"flip": "horizontal_and_vertical", "rotation": 0.0, "zoom": 0.0, "contrast": 0.0}},
        "model": {"name": "dsconv", "input_size": size, "args": {"alpha": 0.5, "depth": 7, "dropout": 0.2}},
        "train": {"seed": 0, "optimizer": "adam", "head": {"epochs": 1, "lr": 0.003}, "finetune": {"blocks": 0}},
        "compress": {"enabled": True, "max_accuracy_drop": 1.0, "routes": ["tflite-int8"]},
        "export": {"formats": ["tflite-fp32", "tflite-int8", "onnx"], "calibration_images": 64},
        "evaluate": {"warmup": 5, "runs": 20, "threads": [1]},
    }


def measured(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` in its own process; its wall seconds, peak RSS (MB) and exit code."""
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                             env={**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
        _, status, usage = os.wait4(p.pid, 0)   # this child's own rusage (RUSAGE_CHILDREN is the max of all)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {p.returncode}; see {log}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}   # ru_maxrss: KiB on Linux


def split_counts(data: Path) -> dict[str, int]:
    meta = json.loads((data / "meta.json").read_text())
    return {s: sum(c.values()) for s, c in meta["counts"].items()}


def run_point(name: str, multiple: int, size: int, work: Path, cache_mb: float) -> dict:
    edgecnn = [sys.executable, "-m", "edgecnn.cli"]
    data, run = work / f"data-{name}", work / f"run-{name}"
    shutil.rmtree(run, ignore_errors=True)
    log = work / f"{name}.log"
    per_class = BASE_PER_CLASS * multiple
    print(f"[{name}] generating {4 * per_class} images at {size} px", flush=True)
    stages = {"generate": measured([*edgecnn, "data", "make-defects", str(data), "--per-class", str(per_class),
                                    "--size", str(size)], log)}
    counts = split_counts(data)
    stages["generate"]["images"] = sum(counts.values())
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe(f"scale-{name}", data, size, cache_mb), sort_keys=False))
    # the images each stage goes over: an epoch of train + val; the val split (chooser); calibration; test
    images = {"train": counts["train"] + counts["val"], "compress": counts["val"], "export": 64,
              "evaluate": counts["test"]}
    for stage in STAGES:
        print(f"[{name}] {stage}", flush=True)
        stages[stage] = {**measured([*edgecnn, stage, str(run)], log), "images": images[stage]}
    for s in stages.values():
        s["s_per_1k_images"] = round(1000 * s["wall_s"] / max(1, s["images"]), 2)
    report = json.loads((run / "report.json").read_text())
    top1 = {k: a["metrics"]["accuracy"] for k, a in report["artifacts"].items() if "metrics" in a}
    splits_mb = sum(p.stat().st_size for p in (run / "splits").glob("*.npy")) / 2**20
    return {"multiple": multiple, "image_size": size, "images": sum(counts.values()), "splits": counts,
            "stages": stages, "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values()),
            "pipeline_wall_s": round(sum(stages[s]["wall_s"] for s in STAGES), 2),
            "decoded_splits_on_disk_mb": round(splits_mb, 1), "test_top1": top1}


def ratios(points: dict) -> dict:
    """Peak RSS and seconds per image of the larger points against 1x, per stage; and 16x against 4x, where a
    stage's fixed cost (starting Python and TensorFlow, building the model, timing latency) weighs less."""
    out = {}
    for name, base_name in (("4x", "1x"), ("16x", "1x"), ("16x", "4x")):
        if name not in points or base_name not in points:
            continue
        p, base = points[name], points[base_name]
        out[f"{name}/{base_name}"] = {
            "peak_rss": round(p["peak_rss_mb"] / base["peak_rss_mb"], 3),
            "per_stage_peak_rss": {s: round(p["stages"][s]["peak_rss_mb"] / base["stages"][s]["peak_rss_mb"], 3)
                                   for s in STAGES},
            "per_stage_s_per_image": {s: round(p["stages"][s]["s_per_1k_images"] /
                                               base["stages"][s]["s_per_1k_images"], 3)
                                      for s in ("generate", "train", "compress", "evaluate")},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=",".join(POINTS), help=f"points to run, of {','.join(POINTS)}")
    ap.add_argument("--work", default="/tmp/edgecnn-scale", help="where data sets and run directories go")
    ap.add_argument("--cache-mb", type=float, default=64, help="data.cache_memory_mb of the runs")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    ap.add_argument("--note", default="", help="a sentence about the machine's load, kept in the JSON")
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [n for n in names if n not in POINTS]
    if bad:
        ap.error(f"--sizes: unknown point(s) {bad}; choose from {list(POINTS)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    points = old.get("points", {})   # points not run now are kept from the last run
    sys.path.insert(0, str(ROOT))
    from edgecnn.runtime.latency import machine_info

    def write() -> None:   # after every point: a long run keeps what it measured
        result = {"benchmark": "scale", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "machine": {**machine_info(), "python": platform.python_version()},
                  "threads": {"cpu_count": os.cpu_count(), "tf_intra_op": "default (all cores)"},
                  "model": "dsconv alpha 0.5 depth 7, 1 epoch from scratch, batch 32",
                  "cache_memory_mb": args.cache_mb, "note": args.note or old.get("note", ""),
                  "points": points, "ratios": ratios(points)}
        if not names:   # only the ratios recomputed: the measuring run's date and machine stay
            result.update({k: old[k] for k in ("created", "machine", "threads") if k in old})
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")

    for name in names:
        multiple, size = POINTS[name]
        points[name] = run_point(name, multiple, size, work, args.cache_mb)
        print(json.dumps({name: {k: v for k, v in points[name].items() if k != "stages"}}), flush=True)
        write()
    write()
    print(json.dumps(ratios(points), indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
