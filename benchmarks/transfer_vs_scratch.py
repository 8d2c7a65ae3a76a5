"""Does transfer from the offline ImageNet weights beat random initialisation with little data?

    python benchmarks/transfer_vs_scratch.py [--models mobilenet_v2 efficientnet_lite0] [--fraction 0.1]
        [--epochs 20] [--lr-decay 0.8] [--variants imagenet imagenet_decay scratch] [--out FILE]

Builds a subset of the bundled defect set with `fraction` of each class's training images (val
and test complete), then trains each model (any with offline ImageNet weights) with the same
epoch budget: from ImageNet (head, then fine-tune every block at one rate), from ImageNet with
layer-wise learning-rate decay (``finetune.lr_decay``: smaller steps closer to the input), and
from random weights (everything trainable). Writes the test accuracies (with 95 % intervals) as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def subset(src: Path, dst: Path, fraction: float, seed: int = 0) -> dict:
    """Symlink `fraction` of each class's train images (stratified) and all val/test images."""
    if dst.exists():
        shutil.rmtree(dst)
    counts = {}
    for split in ("train", "val", "test"):
        for cls_dir in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            files = sorted(cls_dir.glob("*.png"))
            if split == "train":
                rng = np.random.default_rng([seed, len(counts)])
                files = sorted(rng.choice(files, max(2, round(len(files) * fraction)), replace=False))
                counts[cls_dir.name] = len(files)
            (dst / split / cls_dir.name).mkdir(parents=True, exist_ok=True)
            for f in files:
                os.symlink(f.resolve(), dst / split / cls_dir.name / f.name)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "defects")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=20, help="total epochs per run")
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--work", type=Path, default=ROOT / "export" / "bench-transfer")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2"])
    ap.add_argument("--lr-decay", type=float, default=0.8, help="finetune.lr_decay of the imagenet_decay variant")
    ap.add_argument("--variants", nargs="+", default=["imagenet", "imagenet_decay", "scratch"],
                    choices=["imagenet", "imagenet_decay", "scratch"])
    args = ap.parse_args(argv)

    from edgecnn._io import write_json
    from edgecnn.config import recipe_from_dict
    from edgecnn.data.defects import make_defects
    from edgecnn.pipeline import Run

    if not args.data.exists():
        make_defects(args.data, seed=0)
    sub = args.work / "data"
    counts = subset(args.data, sub, args.fraction)
    head = max(1, args.epochs // 3)
    common = {"data": {"path": str(sub), "batch_size": 16, "min_images_per_class": 2},
              "export": {"formats": []}, "evaluate": {"runs": 10, "warmup": 2, "threads": [0]}}
    # Transfer uses the default recipe's schedule (phase 1 head, phase 2 every block with
    # BatchNorm adapting); from scratch gets the same number of epochs with everything trainable.
    def variant(model: str, kind: str) -> dict:
        if kind == "scratch":
            return {"model": {"name": model, "input_size": args.input_size, "args": {"weights": None}},
                    "train": {"freeze_backbone": "no", "head": {"epochs": args.epochs, "lr": 0.001},
                              "finetune": {"blocks": 0}, "early_stopping_patience": 6}}
        decay = args.lr_decay if kind == "imagenet_decay" else 1.0
        return {"model": {"name": model, "input_size": args.input_size, "args": {"weights": "imagenet"}},
                "train": {"head": {"epochs": head, "lr": 0.003},
                          "finetune": {"blocks": 99, "epochs": args.epochs - head, "lr_factor": 0.1,
                                       "train_batchnorm": True, "lr_decay": decay},
                          "early_stopping_patience": 6}}

    from edgecnn.export.manifest import init_manifest

    per_model = {}
    for model in args.models:
        results = {}
        for kind in args.variants:
            recipe = recipe_from_dict({"name": f"bench-{model}-{kind}", **common, **variant(model, kind)})
            run = Run(recipe, args.work / model / kind)
            t0 = time.perf_counter()
            run.train(force=True)
            (run.dir / "manifest.json").unlink(missing_ok=True)
            init_manifest(run.dir, name=recipe.name, labels=run.dataset().classes)
            res = run.evaluate(force=True)
            m = res.report["artifacts"]["model.keras"]["metrics"]
            results[kind] = {"test_accuracy": m["accuracy"], "accuracy_ci95": m["accuracy_ci95"],
                             "macro_f1": m["macro_f1"], "lr_decay": recipe.train.finetune.lr_decay,
                             "train_seconds": round(time.perf_counter() - t0, 1)}
            print(f"{model} {kind}: test accuracy {m['accuracy']:.4f}", file=sys.stderr)
        acc = {k: v["test_accuracy"] for k, v in results.items()}
        margins = {f"{k}_minus_scratch_pp": 100 * (acc[k] - acc["scratch"])
                   for k in ("imagenet", "imagenet_decay") if k in acc and "scratch" in acc}
        if "imagenet" in acc and "imagenet_decay" in acc:
            margins["decay_minus_uniform_pp"] = 100 * (acc["imagenet_decay"] - acc["imagenet"])
        per_model[model] = {"results": results, **margins}
    out = {"fraction": args.fraction, "train_images_per_class": counts, "epochs": args.epochs,
           "input_size": args.input_size, "lr_decay": args.lr_decay, "cpu_count": os.cpu_count(),
           "load_average_at_end": os.getloadavg(), "models": per_model}
    path = args.out or args.work / "transfer_vs_scratch.json"
    write_json(path, out)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
