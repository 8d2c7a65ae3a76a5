"""Is int8 the problem, or is the float model fragile? A run's float model under tiny input noise, beside its int8.

    python benchmarks/int8_fragility.py RUN [--out benchmarks/results/int8_fragility_<run>.json]

For a classify run directory (its val split decoded under ``splits/``, its data folder in recipe.yaml):

* the float model's top-1 agreement with itself when every pixel moves by up to +-0.5, 1, 2 and 4 grey levels
  (uniform noise, 0-255 scale) -- rounding a pixel moves it by at most 0.5;
* its full-int8 TFLite (min/max, 200 calibration images) agreement and top-1 on val;
* the same after re-estimating every BatchNorm's statistics on the training images (``adapt_batchnorm``):
  a fine-tuned model whose BatchNorm trained on batches keeps moving averages that may not fit its weights.

Written for issue 31's question: why do ImageNet backbones lose points in int8 on grey digits upsampled to 96 px.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from edgecnn._io import write_json
    from edgecnn._trust import load_keras
    from edgecnn.compress._fit import adapt_batchnorm
    from edgecnn.config import load_recipe
    from edgecnn.data.decoded_split import SPLITS_DIR, decoded_split
    from edgecnn.data.folders import discover
    from edgecnn.data.loader import calibration_arrays
    from edgecnn.quantize import tflite_int8
    from edgecnn.runtime import load_runner
    from edgecnn.runtime.latency import machine_info

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    recipe = load_recipe(args.run / "recipe.yaml")
    d = recipe.data
    ds = discover(Path(d.path), val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=d.split_seed,
                  min_images_per_class=d.min_images_per_class, channels=d.channels)
    size = recipe.model.input_size
    val = np.asarray(decoded_split(ds, "val", size, args.run / SPLITS_DIR), np.float32)
    vy = ds.labels("val")
    model = load_keras(args.run / "model.keras")
    calib = calibration_arrays(ds, size, 200, seed=0)
    train = calibration_arrays(ds, size, len(ds.labels("train")), seed=3)
    rng = np.random.default_rng(0)
    noisy = {amp: np.clip(val + rng.uniform(-amp, amp, val.shape), 0, 255).astype(np.float32)
             for amp in (0.5, 1.0, 2.0, 4.0)}

    def predict(x):
        return np.concatenate([model(x[i:i + 64], training=False).numpy() for i in range(0, len(x), 64)]).argmax(1)

    def figures() -> dict:
        ref = predict(val)
        out = {"val_top1": float((ref == vy).mean())}
        out.update({f"float_vs_float_noise_pm{amp:g}": float((predict(x) == ref).mean()) for amp, x in noisy.items()})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.int8.tflite"
            path.write_bytes(tflite_int8(model, calib))
            runner = load_runner(path, threads=0)
            q = np.concatenate([runner(val[i:i + 64]) for i in range(0, len(val), 64)]).argmax(1)
            runner.close()
        out.update({"int8_agreement": float((q == ref).mean()), "int8_top1": float((q == vy).mean())})
        return out

    result = {"run": str(args.run), "machine": machine_info(), "val_images": len(vy), "model": recipe.model.name,
              "input_size": size, "train_batchnorm": recipe.train.finetune.train_batchnorm, "as_trained": figures()}
    result["bn_layers_adapted"] = adapt_batchnorm(model, train)
    result["after_batchnorm_adaptation"] = figures()
    out = args.out or ROOT / "benchmarks" / "results" / f"int8_fragility_{args.run.name}.json"
    write_json(out, result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
