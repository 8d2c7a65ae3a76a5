"""Training levers for the default recipe, one at a time: train wall time and float val/test top-1.

Each variant is models/defects-mobilenetv2.yaml with a few keys changed, trained by ``edgecnn.train.train`` in its
own process on the bundled defect set (the same seed), then scored on the val and test splits. The variants
answer issue 35's questions: how many fine-tuning epochs, which learning-rate schedule, how many blocks to
fine-tune, which input size; ``benchmarks/train_throughput.py`` holds the step's speed.

    python benchmarks/train_levers.py                 # every variant -> benchmarks/results/train_levers.json
    python benchmarks/train_levers.py --only ft6-onecycle-0.3
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "train_levers.json"
# The recipe before issue 35; every variant below changes a few of these keys (the rest is the recipe file's).
BEFORE = {"train.head.features": "augmented", "train.finetune.epochs": 12, "train.finetune.lr_factor": 0.1,
          "train.finetune.schedule": "cosine"}
ONECYCLE = {**BEFORE, "train.finetune.schedule": "onecycle", "train.finetune.lr_factor": 0.3}
VARIANTS: dict[str, dict] = {
    "base": BEFORE,   # 3 head epochs on augmented batches + 12 fine-tuning epochs, cosine from 3e-4
    "ft6": {**BEFORE, "train.finetune.epochs": 6},
    "ft6-top9": {**BEFORE, "train.finetune.epochs": 6, "train.finetune.blocks": 9},
    "ft6-96px": {**BEFORE, "train.finetune.epochs": 6, "model.input_size": 96},
    "ft4-onecycle-0.3": {**ONECYCLE, "train.finetune.epochs": 4},
    "ft5-onecycle-0.3": {**ONECYCLE, "train.finetune.epochs": 5},
    "ft6-onecycle-0.3": {**ONECYCLE, "train.finetune.epochs": 6},
    "ft6-onecycle-0.3-cached": {**ONECYCLE, "train.finetune.epochs": 6, "train.head.features": "cached"},
    "default": {},   # the recipe as shipped: 5 one-cycle epochs, the head on cached features
    # the shipped recipe with BatchNorm frozen in phase 2 (inference mode: no batch statistics, a cheaper backward)
    "default-frozen-bn": {"train.finetune.train_batchnorm": False},
}


def train_one(name: str, sets: dict, recipe: Path) -> dict:
    """Train one variant in this process; its wall time and float top-1 on val and test."""
    import numpy as np

    from edgecnn.cli import _apply_sets  # the overrides as `edgecnn run --set KEY=VALUE` applies them
    from edgecnn.config import load_recipe
    from edgecnn.data.folders import discover
    from edgecnn.data.loader import make_dataset
    from edgecnn.train import train

    rec = _apply_sets(load_recipe(recipe), [f"{key}={json.dumps(value)}" for key, value in sets.items()])
    ds = discover(ROOT / rec.data.path)
    run = ROOT / "export" / "bench-train-levers" / name
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    t0 = time.perf_counter()
    res = train(rec, ds, run)
    out = {"name": name, "sets": sets, "train_s": round(time.perf_counter() - t0, 1),
           "phases": [{"name": p["name"], "epochs": len(p.get("loss", []))} for p in res.history["phases"]]}
    for split in ("val", "test"):
        probs = res.model.predict(make_dataset(ds, split, rec.model.input_size, 64), verbose=0)
        out[split] = round(float(np.mean(probs.argmax(-1) == ds.labels(split))), 4)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", action="append", choices=sorted(VARIANTS))
    p.add_argument("--recipe", default=str(ROOT / "models" / "defects-mobilenetv2.yaml"))
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print("RESULT " + json.dumps(train_one(a.one, VARIANTS[a.one], Path(a.recipe))))
        return
    from edgecnn.runtime.latency import machine_info

    doc = json.loads(OUT.read_text()) if OUT.exists() else {}
    doc["machine"] = machine_info()
    results = doc.setdefault("variants", {})
    for name in a.only or list(VARIANTS):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--recipe", a.recipe], env=env, cwd=ROOT,
                              capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        results[name] = json.loads(lines[-1][7:]) if lines else {"name": name, "error": proc.stderr[-2000:]}
        print(json.dumps(results[name]), flush=True)
        OUT.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
