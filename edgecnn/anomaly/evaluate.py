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

from edgecnn._io import artifact_bytes, atomic_path, sha256_file, write_json
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
        m = art["metrics"]
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
    from edgecnn.evaluate.latency import machine_info, measure_latency, resolve_threads
    from edgecnn.export.manifest import read_manifest, verify_artifact
    from edgecnn.report import render_report
    from edgecnn.runtime import load_runner
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
        ref_scores = ref_auroc = ref_runner = None
        first = load_images([ds.test[0].path], size)[0]  # the latency probe
        for name in [REFERENCE, *manifest["artifacts"]]:
            entry = {"format": "keras", "runtime": "keras", "precision": "fp32"}
            if name != REFERENCE:
                entry = verify_artifact(r.dir, name, manifest)
            runner = load_runner(r.dir / name, threads=max(threads), runtime=entry.get("runtime"))
            scores, pixel = _score_split(runner, ds, size, known)
            metrics = {**image_metrics(scores, defect, kinds, cfg.normal), **pixel}
            if ref_scores is None:
                ref_scores, ref_auroc, ref_runner = scores, metrics["auroc"], runner
            metrics["auroc_drop"] = ref_auroc - metrics["auroc"]
            metrics["score_correlation"] = rank_correlation(ref_scores, scores)
            metrics["max_score_diff"] = float(np.abs(ref_scores - scores).max())
            latency = {}
            for t in threads:
                if runner.backend == "keras" and t != max(threads):
                    continue
                run_t = runner if t == max(threads) else load_runner(r.dir / name, threads=t, runtime=runner.backend)
                latency[str(t)] = measure_latency(run_t, first, warmup=ecfg.warmup, runs=ecfg.runs)
            report["artifacts"][name] = {
                "file": name, "format": entry.get("format"), "runtime": runner.backend,
                "precision": entry.get("precision"), "route": entry.get("route"),
                "sha256": entry.get("sha256") or sha256_file(r.dir / name), "bytes": artifact_bytes(r.dir / name),
                "metrics": metrics, "latency": latency, "roc": roc_points(scores, defect)}
            all_scores[name] = [round(float(s), 6) for s in scores]
            lat = next(iter(latency.values()))
            log.info("evaluated %-20s auroc=%.4f pixel_auroc=%s f1=%.3f corr=%.4f p50=%.2fms", name, metrics["auroc"],
                     f"{metrics.get('pixel_auroc', float('nan')):.4f}", metrics["f1"], metrics["score_correlation"],
                     lat["p50_ms"])
        report["reference_auroc"] = ref_auroc
        report["gallery"] = _write_gallery(r, ds, ref_runner, size, ref_scores)
        write_json(r.dir / "scores.json", {"threshold": 0.5, "normal": cfg.normal, "defect": defect.tolist(),
                                           "kinds": kinds, "scores": all_scores,
                                           "threshold_rule": manifest.get("anomaly", {}).get("threshold_rule")})
    result = finish_evaluation(r.store, report, r.recipe.budgets, fp, manifest=manifest,
                               markdown=render_anomaly_markdown, outputs=("report.json", "scores.json"))
    render_report(r.dir)
    return result
