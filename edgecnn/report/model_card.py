"""MODEL_CARD.md: what a run's model is for, what it was trained and tested on, how well it does
(with honest uncertainty), what ships, where it breaks, and how to make it again.

The sections follow Mitchell et al., "Model Cards for Model Reporting" (2019), trimmed to what a
run directory can state as fact: every number comes from report.json, manifest.json,
dataset.json, history.json or gradcam.json, never from prose typed by hand.

Example:
    >>> from edgecnn.report import write_model_card
    >>> write_model_card("export/defects-mobilenetv2")       # doctest: +SKIP
    PosixPath('export/defects-mobilenetv2/MODEL_CARD.md')
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from edgecnn._io import sha256_file, write_text
from edgecnn.report.markup import check_verdict, measured_text, num, unit_text, unmeasured_text
from edgecnn.report.run_files import RunFiles, latency_p50, read_run
from edgecnn.tasks import get_task

__all__ = ["write_model_card", "render_model_card", "MODEL_CARD"]

MODEL_CARD = "MODEL_CARD.md"


def write_model_card(run_dir: str | os.PathLike, *, run: RunFiles | None = None) -> Path:
    """Write ``RUN_DIR/MODEL_CARD.md`` (atomically) from the run's files.

    Args:
        run_dir: an evaluated run directory (report.json required).
        run: the run's files, when the caller has read them already (saves re-reading).

    Returns:
        The path of MODEL_CARD.md.

    Raises:
        EdgecnnError: the run has no readable report.json.
    """
    run = run or read_run(run_dir)
    return write_text(Path(run_dir) / MODEL_CARD, render_model_card(run))


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _kb(b: float | None) -> str:
    return "—" if b is None else f"{b / 1024:,.1f} KB"


def _latency_cell(a: dict) -> str:
    """p50 / p95 at one thread, else the p50 measured (and how)."""
    lat1 = a.get("latency", {}).get("1")
    if lat1:
        return f"{lat1['p50_ms']:.2f} / {lat1['p95_ms']:.2f}"
    p50, note = latency_p50(a)
    return f"{p50:.2f} ({note})" if p50 else "—"


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def render_model_card(run: RunFiles) -> str:
    """The model card's Markdown for a run's files (the Grad-CAM score from findings/ or gradcam.json)."""
    r = run.report
    manifest = run.manifest or {}
    model = manifest.get("model", {})
    pre = manifest.get("preprocessing", {})
    recipe = run.recipe
    classes = run.classes
    ref_name = run.reference
    ref = r["artifacts"].get(ref_name, {}).get("metrics", {})
    loc = run.localisation
    meta = _dataset_meta(run)
    synthetic = bool(meta and meta.get("generator") == "edgecnn.data.defects")
    desc = run.description
    size = model.get("input_size", "?")
    verdict = r.get("verdict")
    lines = [f"# Model card: {run.name}", ""]
    lines += [desc, ""] if desc else []
    lines += [f"- **Model**: `{model.get('name', '?')}` ({model.get('family', 'cnn')}), input {size}×{size} RGB, "
              f"{len(classes)} classes: {', '.join(f'`{c}`' for c in classes)}.",
              f"- **Evaluated**: {r.get('created', '?')} on {r.get('test_images', '?')} held-out test images; "
              f"budget verdict **{(verdict or 'not checked').upper()}**."]
    if manifest.get("versions"):
        lines.append("- **Made with**: " + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items()) + ".")
    lines.append("")

    spec = get_task(run.task)
    classify = run.task == "classify"
    lines += ["## Intended use", "",
              f"{spec.use.format(classes=', '.join(f'`{c}`' for c in classes))}, on a line-side PC, a "
              "phone or an embedded board, using one of the artifacts below (pick by the accuracy / latency / size "
              "trade-off and the budgets).",
              f"- Input: RGB pixels 0–255, resized to {size}×{size}"
              + (" (normalisation is inside the graph: do not normalise again)." if pre.get("in_graph") else ".")
              + " The runtime only resizes.",
              f"- Output: {spec.output}.",
              "- Suited to: flagging parts for review, triage, monitoring defect rates.",
              "- Not suited to: being the only safety-critical accept/reject decision; surfaces, lighting, "
              "cameras or defect types unlike the training data; images of another size or colour order "
              "without resizing/conversion.", ""]

    lines += ["## Data", ""]
    d = run.dataset or {}
    if d:
        lines.append(f"Source: `{d.get('root', '?')}` (layout `{d.get('layout', '?')}`, fingerprint "
                     f"`{str(d.get('fingerprint', ''))[:16]}`).")
        if synthetic:
            lines.append(
                f"**Synthetic.** This is edgecnn's bundled defect set: scratches, cracks and spots drawn "
                f"procedurally (generator version {meta.get('version')}, seed {meta.get('seed')}, "
                f"{meta.get('size')} px) on random crops of photographs that ship with scikit-image "
                f"({', '.join(meta.get('textures', []))}); {_pct(meta.get('hard_fraction', 0))} of the defects are "
                "drawn faint or small. It is made for demonstrating and testing the pipeline.")
        counts = d.get("counts", {})
        splits = list(counts)
        rows = [[f"`{c}`"] + [str(counts[s].get(c, 0)) for s in splits] for c in classes]
        rows.append(["**total**"] + [f"**{sum(counts[s].values())}**" for s in splits])
        lines += [""] + _md_table(["class"] + splits, rows)
        if d.get("skipped"):
            lines.append(f"\n{len(d['skipped'])} unreadable image(s) were skipped.")
    else:
        lines.append("No dataset.json in the run directory: the data is not recorded.")
    if recipe is not None:
        a = (recipe.get("data") or {}).get("augment") or {}
        t = recipe.get("train") or {}
        lines += ["", f"Training augmentation: flip {a.get('flip', '?')}, rotation ±{a.get('rotation', '?')} turn, "
                      f"zoom ±{a.get('zoom', '?')}, contrast ±{a.get('contrast', '?')}. Optimiser "
                      f"{t.get('optimizer', '?')}, seed {t.get('seed', '?')}."]
    for ph in (run.history or {}).get("phases", []):
        lr = ph.get("lr")
        lr0 = lr[0] if isinstance(lr, list) and lr else lr
        tr = ph.get("trainable")
        lines.append(f"- Phase `{ph.get('name')}`: {len(ph.get('loss', []))} epoch(s), trainable "
                     f"{', '.join(tr) if isinstance(tr, list) else tr}, lr {lr0:.2g}"
                     + (f" with {ph['schedule']} decay" if ph.get("schedule") else "") + ".")
    lines.append("")

    lines += _task_metrics(run, spec) if not classify else _classifier_metrics(run, ref_name, ref, loc)

    lines += ["## Artifacts and budgets", ""]
    checks: dict[str, list[dict]] = {}
    for c in (r.get("budgets") or {}).get("checks", []):
        checks.setdefault(c["artifact"], []).append(c)
    rows = []
    names = [ref_name] + [n for n in manifest.get("artifacts", {}) if n != ref_name]
    names += [n for n in r["artifacts"] if n not in names]
    for name in names:
        e = manifest.get("artifacts", {}).get(name, {})
        a = r["artifacts"].get(name, {})
        nbytes = a.get("bytes", e.get("bytes"))
        if not e.get("sha256") and (run.dir / name).is_file():
            e = {**e, "sha256": sha256_file(run.dir / name)}
        cs = checks.get(name, [])
        bad = [c for c in cs if not c["ok"]]
        budget = "none set" if not cs else f"{len(cs)} checks, all hold" if not bad else \
            f"{len(cs)} checks, **{len(bad)} broken**: " + "; ".join(
                f"{c['budget']} {check_verdict(c) if c['measured'] is None else measured_text(c)} "
                f"(allowed {num(c['allowed'])}{unit_text(c['unit'])})" for c in bad)
        fmt = e.get("format") or a.get("format") or ""
        rows.append([f"`{name}`", fmt, e.get("runtime") or a.get("runtime") or "", _kb(nbytes),
                     f"`{e['sha256'][:12]}`" if e.get("sha256") else "—", budget])
    lines += _md_table(["file", "format", "runtime", "size", "sha256", "budgets"], rows)
    lines.append("")

    lines += ["## Limitations", ""]
    lim = []
    if synthetic:
        lim.append("**Trained and tested on synthetic defects** drawn on three textures. Real scratches, cracks and "
                   "stains, other materials, lighting and optics will look different: measure on real images "
                   "before relying on it.")
    per_class = ref.get("per_class", {}) if classify else {}
    if per_class:
        low = sorted(per_class.items(), key=lambda kv: kv[1]["recall"])[:2]
        lim.append("Lowest recall: " + ", ".join(f"`{c}` {v['recall']:.2f}" for c, v in low) +
                   " (reference model); these classes are missed most often.")
        cm = ref.get("confusion_matrix")
        if cm:
            off_diagonal = [(i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j]
            worst = max(off_diagonal, key=lambda ij: cm[ij[0]][ij[1]])
            if cm[worst[0]][worst[1]]:
                lim.append(f"Most frequent confusion: `{classes[worst[0]]}` predicted as `{classes[worst[1]]}` "
                           f"({cm[worst[0]][worst[1]]} of {sum(cm[worst[0]])} test images).")
    if classify:
        lo, hi = ref.get("accuracy_ci95", (0.0, 1.0))
        lim.append(f"The test split is small ({r.get('test_images', '?')} images): the reference accuracy is only "
                   f"known to within {lo:.3f} – {hi:.3f}.")
    disagree = [(n, a["metrics"]["agreement"]) for n, a in r["artifacts"].items()
                if classify and a.get("metrics", {}).get("agreement", 1.0) < 0.99]
    if disagree:
        lim.append("Quantised artifacts do not always agree with the float model: " +
                   ", ".join(f"`{n}` {ag:.3f}" for n, ag in disagree) + ".")
    lim.append("Latency was measured on the evaluation machine above; other CPUs, boards and phones differ — "
               "re-measure on the target (`edgecnn evaluate`).")
    broken: dict[str, list[str]] = {}
    for v in (r.get("budgets") or {}).get("violations", []):
        broken.setdefault(v["artifact"], []).append(v["budget"])
    if broken:
        lim.append("Budgets broken (see the table above): " +
                   "; ".join(f"`{n}` {', '.join(bs)}" for n, bs in broken.items()) + ".")
    lines += [f"- {x}" for x in lim] + [""]

    lines += ["## How to reproduce", "", "```sh"]
    if synthetic:
        lines.append(f"edgecnn data make-defects {d.get('root', 'data/defects')} --seed {meta.get('seed')} "
                     f"--per-class {meta.get('per_class')} --size {meta.get('size')}")
    lines += [f"edgecnn run {run.dir / 'recipe.yaml'} --output {run.dir}", "```", "",
              "`recipe.yaml` in the run directory is the resolved recipe (every default written out, the data "
              "path absolute); training is seeded and deterministic op-wise, so a re-run on the same data and "
              "library versions gives the same model up to floating-point differences between machines. "
              "Each artifact's sha256 is in `manifest.json`.", ""]
    return "\n".join(lines)


def _classifier_metrics(run: RunFiles, ref_name: str, ref: dict, loc: dict | None) -> list[str]:
    """A classifier's Metrics section: top-1 with its Wilson interval, agreement, latency; per class; Grad-CAM."""
    r = run.report
    lines: list[str] = []
    lines += ["## Metrics", "",
              f"On the test split ({r.get('test_images', '?')} images). Intervals are 95 % Wilson score intervals of "
              "the top-1 accuracy: with this many test images, differences inside them are not evidence. "
              "Agreement: share of test images whose top-1 equals the float reference's. Latency: batch 1, "
              f"p50/p95 on {r.get('machine', {}).get('cpu', '?')} ({r.get('machine', {}).get('cores', '?')} cores).",
              ""]
    rows = []
    for name, a in r["artifacts"].items():
        if "metrics" not in a:  # a runtime that cannot run on the evaluation machine
            rows.append([f"`{name}`", a.get("precision") or "", unmeasured_text(a), "",
                         "", "", ""])
            continue
        m = a.get("metrics", {})
        lo, hi = m.get("accuracy_ci95", (0.0, 0.0))
        lat = _latency_cell(a)
        rows.append([f"`{name}`", a.get("precision") or "", f"{m.get('accuracy', 0):.4f}", f"{lo:.3f} – {hi:.3f}",
                     f"{m.get('macro_f1', 0):.3f}", f"{m.get('agreement', 1.0):.4f}", lat])
    lines += _md_table(["artifact", "precision", "top-1", "95 % interval", "macro F1", "agreement",
                        "p50 / p95 ms @1 thread"], rows)
    per_class = ref.get("per_class", {})
    if per_class:
        lines += ["", f"Per class (`{ref_name}`):", ""]
        lines += _md_table(["class", "precision", "recall", "F1", "support"],
                           [[f"`{c}`", f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}",
                             str(v["support"])] for c, v in per_class.items()])
    if loc and loc.get("fraction") is not None:
        lines += ["", f"Grad-CAM localisation (`{ref_name}`, layer `{loc.get('layer', '?')}`): the heatmap peak of the "
                      f"true class falls inside the defect's bounding box on **{_pct(loc['fraction'])}** of "
                      f"{loc['n']} defect test images, against {_pct(loc['chance'])} by chance (mean box area / "
                      "image area)."]
    lines.append("")

    return lines


def _task_metrics(run: RunFiles, spec) -> list[str]:
    """Another task's Metrics section: its headline figures (``TaskSpec.headline``) and latency per artifact."""
    r = run.report
    lines = ["## Metrics", "",
             f"On the test split ({r.get('test_images', '?')} images). Latency: batch 1, p50/p95 on "
             f"{r.get('machine', {}).get('cpu', '?')} ({r.get('machine', {}).get('cores', '?')} cores). "
             "report.html and report.json hold every figure.", ""]
    rows = []
    for name, a in r["artifacts"].items():
        if "metrics" not in a:
            rows.append([f"`{name}`", a.get("precision") or "", unmeasured_text(a)]
                        + [""] * len(spec.headline))
            continue
        m = a["metrics"]
        lat = _latency_cell(a)
        rows.append([f"`{name}`", a.get("precision") or ""]
                    + [f"{m[key]:.4f}" if isinstance(m.get(key), (int, float)) else "—" for _, key in spec.headline]
                    + [lat])
    lines += _md_table(["artifact", "precision", *(label for label, _ in spec.headline), "p50 / p95 ms @1 thread"],
                       rows)
    lines.append("")
    return lines


def _dataset_meta(run) -> dict | None:
    root = (run.dataset or {}).get("root")
    if not root:
        return None
    path = Path(root) / "meta.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k != "images"}  # the per-image list is large
        return meta
    return None
