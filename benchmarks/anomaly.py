"""Anomaly detection on the bundled defect set: every method x backbone, fitted on good images only.

For each (method, backbone) the real pipeline runs (``task: anomaly``: fit on <= 300 train/good images,
threshold from val, export TFLite fp32 / int8 and ONNX, evaluate on the 360 test images) and the table
row takes the figures from its report.json: image AUROC, F1, pixel AUROC, PRO, IoU of the float model,
int8's route and AUROC, rank correlation of each artifact's scores with the Keras scores, fit and wall
time, and p50/p95 latency at 1 thread (batch 1) per artifact, all measured in the same process.

    .venv/bin/python benchmarks/anomaly.py                      # all four, ~minutes each on 2 cores
    .venv/bin/python benchmarks/anomaly.py --only patchcore:mobilenet_v2

Writes benchmarks/results/anomaly.json. Runs go to export/bench-anomaly/<method>-<backbone>/ and are
resumed when current (delete them to re-measure).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("patchcore", "padim")


def main() -> None:
    from edgecnn._io import write_json
    from edgecnn.config import recipe_from_dict
    from edgecnn.pipeline import run
    from edgecnn.runtime.latency import machine_info
    from edgecnn.tasks.anomaly import BACKBONES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="method:backbone pairs")
    ap.add_argument("--data", default=str(ROOT / "data" / "defects"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "anomaly.json"))
    args = ap.parse_args()
    pairs = [(m, b) for b in BACKBONES for m in METHODS]
    if args.only:
        pairs = [tuple(p.split(":")) for p in args.only]
    base = (ROOT / "models" / "defects-anomaly.yaml").read_text()
    import yaml

    rows = []
    out_path = Path(args.out)
    previous = json.loads(out_path.read_text())["rows"] if out_path.is_file() else []
    for method, backbone in pairs:
        cfg = yaml.safe_load(base)
        cfg["name"] = f"bench-anomaly-{method}-{backbone}"
        cfg["data"] = {"path": args.data, "generate": "defects"}
        cfg["anomaly"].update(method=method, backbone=backbone)
        cfg["evaluate"] = {"warmup": 10, "runs": 100, "threads": [1]}
        t0 = time.perf_counter()
        result = run(recipe_from_dict(cfg), output=ROOT / "export" / "bench-anomaly" / f"{method}-{backbone}")
        wall = time.perf_counter() - t0
        rep = result.report
        fit = json.loads((result.run_dir / "fit.json").read_text())
        int8_json = result.run_dir / "int8.json"
        int8 = json.loads(int8_json.read_text()) if int8_json.is_file() else {}
        ref = rep["artifacts"]["model.keras"]["metrics"]
        row = {"method": method, "backbone": backbone, "train_images": fit["train_images"],
               "fit_seconds": fit["fit_seconds"], "statistics_bytes": fit["statistics_bytes"],
               "wall_seconds_this_call": round(wall, 1), "threshold_rule": fit["threshold"]["rule"],
               "image_auroc": ref["auroc"], "f1": ref["f1"], "recall_per_defect": ref["recall_per_defect"],
               "good_pass_rate": ref["good_pass_rate"], "pixel_auroc": ref.get("pixel_auroc"), "pro": ref.get("pro"),
               "iou": ref.get("iou"), "int8_pick": int8.get("pick"), "int8_candidates": int8.get("candidates"),
               "artifacts": {n: {"precision": a.get("precision"), "bytes": a["bytes"], "auroc": a["metrics"]["auroc"],
                                 "auroc_drop": a["metrics"]["auroc_drop"],
                                 "pixel_auroc": a["metrics"].get("pixel_auroc"),
                                 "score_correlation": a["metrics"]["score_correlation"],
                                 "p50_ms_1t": a["latency"]["1"]["p50_ms"], "p95_ms_1t": a["latency"]["1"]["p95_ms"]}
                             for n, a in rep["artifacts"].items()}}
        rows.append(row)
        print(f"{method:>9} {backbone:<18} AUROC {row['image_auroc']:.4f} pixel {row['pixel_auroc']:.4f} "
              f"PRO {row['pro']:.4f} F1 {row['f1']:.3f} int8 {row['int8_pick']} wall {wall:.0f}s", flush=True)
        keep = [r for r in previous if (r["method"], r["backbone"]) not in {(x["method"], x["backbone"]) for x in rows}]
        write_json(out_path, {"benchmark": "anomaly", "data": args.data, "machine": machine_info(),
                              "note": "2 shared, loaded cores: wall and latency figures are comparable only within "
                                      "this file", "rows": keep + rows})


if __name__ == "__main__":
    main()
