"""The anomaly run's evaluate stage: every artifact on the test split, the same figures for each.

Per artifact (``report["artifacts"][file]["metrics"]``): image ``auroc``, ``auroc_drop`` (float model minus
artifact), ``f1``/``precision``/``recall`` at the threshold, ``recall_per_defect``, ``good_pass_rate``;
where masks exist ``pixel_auroc``, ``pro``, ``iou``; and ``score_correlation``, Spearman's rank correlation
of its scores with model.keras's. Latency at each ``evaluate.threads``, as the classifier's.
``scores.json`` (test scores per artifact, labels, kinds, val threshold) and ``maps/`` (the float
model's worst cases as heatmap overlays) feed the report's anomaly sections.

The test split is decoded ``BATCH`` images at a time for each artifact and its maps go into a
:class:`PixelAccumulator`, so memory holds a batch, the scores and the accumulator's histograms, not the
split's images or maps; the gallery's few images are decoded and scored again at the end.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import numpy as np

from edgecnn._io import atomic_path, sha256_file, write_json
from edgecnn.anomaly.data import AnomalySet, load_images, load_masks
from edgecnn.anomaly.metrics import PixelAccumulator, image_metrics, rank_correlation, roc_points
from edgecnn.anomaly.pipeline import BATCH
from edgecnn.anomaly.serve import split_outputs

log = logging.getLogger("edgecnn.anomaly")
REFERENCE = "model.keras"
GALLERY = 8


def _overlay(image: np.ndarray, amap: np.ndarray) -> np.ndarray:
    """The image with the map as a red-yellow heat overlay where it passes 0.5 (what the verdict uses)."""
    heat = np.clip((amap - 0.25) / 0.5, 0, 1)[..., None]
    colour = np.stack([np.ones_like(amap), np.clip(amap * 2 - 1, 0, 1), np.zeros_like(amap)], -1) * 255
    out = image * (1 - 0.6 * heat) + colour * 0.6 * heat
    return np.clip(out, 0, 255).astype(np.uint8)


def _write_gallery(r, ds: AnomalySet, runner, size: int, scores: np.ndarray) -> list[dict]:
    """The worst cases of the float model: the highest-scored good images and the lowest-scored defects
    (those few decoded and scored again, so the evaluation never holds the split's images or maps)."""
    from PIL import Image

    defect = np.array([i.defect for i in ds.test])
    good_idx = np.where(~defect)[0][np.argsort(-scores[~defect])][:GALLERY // 2]
    bad_idx = np.where(defect)[0][np.argsort(scores[defect])][:GALLERY // 2]
    picked = [int(i) for i in (*bad_idx, *good_idx)]
    folder = r.dir / "maps"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    if not picked:
        return []
    items = [ds.test[i] for i in picked]
    images, masks = load_images([i.path for i in items], size), load_masks(items, size)
    _, maps = split_outputs(runner.predict_outputs(images))
    out = []
    for rank, (i, image, amap, mask) in enumerate(zip(picked, images, maps, masks)):
        name = f"maps/{rank:02d}_{ds.test[i].kind}.png"
        tile = np.concatenate([image.astype(np.uint8), _overlay(image, amap),
                               np.repeat((mask * 255).astype(np.uint8)[..., None], 3, -1)], 1)
        with atomic_path(r.dir / name, suffix=".png") as tmp:
            Image.fromarray(tile).save(tmp, "PNG")
        out.append({"file": name, "kind": ds.test[i].kind, "score": float(scores[i]), "image": ds.test[i].path,
                    "why": "missed defect" if defect[i] and scores[i] <= 0.5 else
                    "false alarm" if not defect[i] and scores[i] > 0.5 else
                    "lowest-scored defect" if defect[i] else "highest-scored good"})
    return out


def _score_split(runner, ds: AnomalySet, size: int, known: np.ndarray) -> tuple[np.ndarray, dict]:
    """(scores (N,), pixel metrics) of one artifact over the test split, ``BATCH`` images at a time."""
    scores, pixels, any_mask = [], PixelAccumulator(), False
    for start in range(0, len(ds.test), BATCH):
        items = ds.test[start:start + BATCH]
        s, maps = split_outputs(runner.predict_outputs(load_images([i.path for i in items], size)))
        scores.append(s)
        keep = known[start:start + BATCH]
        if keep.any():
            masks = load_masks(items, size)[keep]
            any_mask |= bool(masks.any())
            pixels.update(maps[keep], masks)
    return np.concatenate(scores), pixels.result() if any_mask else {}


def _f(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "—"


def render_anomaly_markdown(report: dict) -> str:
    """report.md of an anomaly run: one row per artifact (image and pixel figures, agreement, latency)."""
    threads = report["latency_protocol"]["threads"]
    a = report.get("anomaly", {})
    head = ["artifact", "runtime", "precision", "size KB", "AUROC", "F1", "pixel AUROC", "PRO", "IoU",
            "score corr."] + [f"p50 ms @{t}t" for t in threads]
    lines = [f"# {report['name']}: anomaly evaluation", "",
             f"{a.get('method')} on {a.get('backbone')}; threshold rule {a.get('threshold_rule')} (0.5 = threshold). "
             f"Test split: {report['test_images']} images ({', '.join(report['classes'])}). Machine: "
             f"{report['machine']['cpu']} ({report['machine']['cores']} cores).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, art in report["artifacts"].items():
        m = art.get("metrics")
        if m is None:   # a further runtime that could not run here, or failed: say which and why
            lines.append(f"| `{name}` | {art['runtime']} | {art.get('precision') or ''} | "
                         f"{'skipped' if 'skipped' in art else 'ERROR'}: {art.get('skipped') or art.get('error')} |")
            continue
        row = [f"`{name}`", art["runtime"], art.get("precision") or "", f"{art['bytes'] / 1024:.1f}", _f(m["auroc"]),
               _f(m["f1"]), _f(m.get("pixel_auroc")), _f(m.get("pro")), _f(m.get("iou")), _f(m["score_correlation"])]
        row += [f"{art['latency'][str(t)]['p50_ms']:.2f}" if str(t) in art["latency"] else "—" for t in threads]
        lines.append("| " + " | ".join(row) + " |")
    b = report.get("budgets") or {}
    lines += ["", f"## Budgets: {'PASS' if not b.get('violations') else 'FAIL'}", ""]
    lines += [f"- {v.get('message', v)}" for v in b.get("violations", [])] or ["No budget broken."]
    return "\n".join(lines) + "\n"


def evaluate_stage(r, force: bool = False):
    """Measure every artifact, apply the budgets, render the report; returns the RunResult."""
    from edgecnn.evaluate.loop import evaluate_all
    from edgecnn.export.manifest import read_manifest
    from edgecnn.report import render_report
    from edgecnn.runtime.latency import machine_info, resolve_threads
    from edgecnn.stages.export import withheld_files
    from edgecnn.stages.verdict import finish_evaluation
    from edgecnn.store import fingerprint as _fp

    ds: AnomalySet = r.dataset()
    manifest = read_manifest(r.dir)
    cfg, ecfg = r.recipe.anomaly, r.recipe.evaluate
    fp = _fp({n: a["sha256"] for n, a in manifest["artifacts"].items()}, sha256_file(r.dir / REFERENCE),
             ecfg.model_dump(mode="json"), ds.fingerprint())
    path = r.dir / "report.json"
    if not force and r.store.is_current("evaluate", fp, ["report.json", "scores.json"]):
        log.info("evaluate: up to date (report.json), skipped measuring; re-checking budgets")
        report = json.loads(path.read_text())
    else:
        from edgecnn.anomaly import graph  # noqa: F401  (the custom layers, for the Keras reference)

        size = cfg.input_size
        defect = np.array([i.defect for i in ds.test])
        kinds = [i.kind for i in ds.test]
        known = np.array([not i.defect or i.mask is not None for i in ds.test])  # pixel metrics: masks known
        threads = sorted({resolve_threads(t) for t in ecfg.threads})
        report = {"task": "anomaly", "name": r.recipe.name,
                  "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "reference": REFERENCE, "test_images": len(ds.test), "classes": [cfg.normal, *ds.defect_kinds],
                  "dataset": ds.to_json(), "anomaly": manifest.get("anomaly", {}), "machine": machine_info(),
                  "latency_protocol": {"batch": 1, "warmup": ecfg.warmup, "runs": ecfg.runs, "threads": threads},
                  "artifacts": {}}
        all_scores: dict[str, list[float]] = {}
        ref: dict = {}   # the reference's scores and AUROC, measured first

        def measure(job, runner) -> dict:
            scores, pixel = _score_split(runner, ds, size, known)
            metrics = {**image_metrics(scores, defect, kinds, cfg.normal), **pixel}
            if not ref:
                ref.update(scores=scores, auroc=metrics["auroc"])
                report["gallery"] = _write_gallery(r, ds, runner, size, scores)
            metrics["auroc_drop"] = ref["auroc"] - metrics["auroc"]
            metrics["score_correlation"] = rank_correlation(ref["scores"], scores)
            metrics["max_score_diff"] = float(np.abs(ref["scores"] - scores).max())
            all_scores[job.key] = [round(float(s), 6) for s in scores]
            entry = manifest["artifacts"].get(job.file, {})
            return {"route": entry.get("route"), "metrics": metrics, "roc": roc_points(scores, defect)}

        first = load_images([ds.test[0].path], size)[0]  # the latency probe
        report["artifacts"], errors = evaluate_all(
            r.dir, manifest, REFERENCE, ecfg, measure, first,
            describe=lambda m: f"auroc={m['auroc']:.4f} pixel_auroc={m.get('pixel_auroc', float('nan')):.4f} "
                               f"f1={m['f1']:.3f} corr={m['score_correlation']:.4f}")
        if errors:
            report["errors"] = errors
        report["reference_auroc"] = ref["auroc"]
        write_json(r.dir / "scores.json", {"threshold": 0.5, "normal": cfg.normal, "defect": defect.tolist(),
                                           "kinds": kinds, "scores": all_scores,
                                           "threshold_rule": manifest.get("anomaly", {}).get("threshold_rule")})
    result = finish_evaluation(r.store, report, r.recipe.budgets, fp, manifest=manifest,
                               withheld=withheld_files(r.store, None if cfg.int8 else ()),
                               markdown=render_anomaly_markdown,
                               outputs=("report.json", "scores.json"))
    render_report(r.dir)
    return result
