"""How often Grad-CAM points at the defect: the localisation score of a run's model.keras, as JSON.

    python benchmarks/gradcam_localisation.py export/defects-mobilenetv2 [--layers block13_add ...]
                                              [--limit 60] [--out FILE]

For every defect test image of the bundled set (meta.json records each defect's bounding box), the
Grad-CAM heatmap of the image's true class is computed at the feature map feeding the head's global
pooling; the score is the fraction of images whose heatmap peak lies inside the box, beside chance
(the mean box area over the image area: what a uniformly random peak would score). ``--layers``
adds the same measurement at other (e.g. finer, earlier) feature maps, for comparison.

Writes RUN_DIR/gradcam.json (the default-layer result, which report.html reuses) unless --out or
--limit is given; --limit N uses N images only, for a quick look.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--layers", nargs="*", default=[], help="other 4-D layers to score as well")
    ap.add_argument("--limit", type=int, default=None, help="at most this many images (spread over classes)")
    ap.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/gradcam.json")
    args = ap.parse_args(argv)

    from edgecnn._io import write_json
    from edgecnn._tf import keras
    from edgecnn.errors import EdgecnnError
    from edgecnn.evaluate.gradcam import localisation_score

    try:
        model = keras.models.load_model(str(args.run_dir / "model.keras"), compile=False)
        t0 = time.perf_counter()
        result = localisation_score(args.run_dir, limit=args.limit, write=False, model=model)
        result["seconds"] = round(time.perf_counter() - t0, 2)
        by_layer = {}
        for layer in args.layers:
            t0 = time.perf_counter()
            r = localisation_score(args.run_dir, layer=layer, limit=args.limit, write=False, model=model)
            by_layer[layer] = {k: r[k] for k in ("fraction", "chance", "n", "grid", "per_class")}
            by_layer[layer]["seconds"] = round(time.perf_counter() - t0, 2)
    except (EdgecnnError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if by_layer:
        result["by_layer"] = by_layer
    for name, r in [(result["layer"], result), *by_layer.items()]:
        print(f"{name:<24} grid {'x'.join(map(str, r['grid']))}: peak in box {r['fraction']:.1%} of {r['n']} "
              f"defect test images, chance {r['chance']:.1%} ({r['fraction'] / r['chance']:.1f}x)", file=sys.stderr)
    out = args.out or args.run_dir / "gradcam.json"
    if args.limit is not None and args.out is None:
        out = args.run_dir / "bench_gradcam.json"  # a partial score must not stand in for the report's
    write_json(out, result)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
