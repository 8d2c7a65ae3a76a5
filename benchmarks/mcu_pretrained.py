"""Pretrained features on a microcontroller, one lever at a time: arena, flash, estimated latency and accuracy.

    python benchmarks/mcu_pretrained.py                       # every lever below (~5 min each on 2 cores)
    python benchmarks/mcu_pretrained.py --only m4 m7          # the shipped recipes only
    python benchmarks/mcu_pretrained.py --collect m4=export/mcu-m4-256k:run.log   # a run made elsewhere

Each lever is a full ``edgecnn run`` of an MCU recipe (``models/mcu-m4-256k.yaml`` / ``mcu-m7-1m.yaml``) with
``--set`` overrides, so every row is trained, int8-converted by the chooser, evaluated on the test split in
LiteRT and in the real TFLite Micro interpreter, and measured the same way: ``report.json``'s top-1 for the
float model, LiteRT int8 and TFLM int8, TFLM's agreement with LiteRT's XNNPACK and reference kernels, the
arena (bisection with the interpreter) and flash (model + estimated kernels), and the latency *estimated* by
``edgecnn.mcu.latency`` for cortex-m4-256k and cortex-m7-1m (an estimate with its basis, never a measurement).
Training time is the span of the run's training log lines (from the training cache to the last epoch).
Results go to ``benchmarks/results/mcu_pretrained.json`` (rows merged by key) and the table in docs/mcu.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "mcu_pretrained.json"
RUNS = ROOT / "export" / "bench-mcu"
M4, M7 = "models/mcu-m4-256k.yaml", "models/mcu-m7-1m.yaml"
# key: (what the lever changes, recipe, --set overrides)
LEVERS: dict[str, tuple[str, str, list[str]]] = {
    "m4": ("shipped cortex-m4-256k recipe", M4, []),
    "m7": ("shipped cortex-m7-1m recipe", M7, []),
    "lite0-b10-96-full": ("truncation only (10 of 16 blocks), 96 px, full width: does not fit 256 KB", M4,
                          ["model.input_size=96", "model.args={blocks: 10, weights: imagenet, dropout: 0.1}"]),
    "lite0-b10-64-full": ("input size 64 px instead of pruning, full width", M4,
                          ["model.input_size=64", "model.args={blocks: 10, weights: imagenet, dropout: 0.1}"]),
    "lite0-b9-96-pruned": ("96 px, blocks 2a/2b expansion pruned to 1/2 (BN scale x L1), 9 blocks", M4,
                           ["model.input_size=96",
                            "model.args={blocks: 9, expand: [1, 0.5, 0.5], weights: imagenet, dropout: 0.1}"]),
    "lite0-b10-96-thin-early": ("96 px, stem/block1a 24 of 32 channels, block2a 32 of 96 and block2b 72 of 144 "
                                "expansion channels (BN scale x L1), 10 blocks", M4,
                                ["model.input_size=96", "model.args={blocks: 10, expand: [1.0, 0.34, 0.5], "
                                 "stem: 0.75, weights: imagenet, dropout: 0.1}"]),
    "lite0-b10-80-thin": ("80 px, block2a/2b keep 2/3 of their expansion channels, 10 blocks", M4,
                          ["model.input_size=80",
                           "model.args={blocks: 10, expand: [1.0, 0.67, 0.67], weights: imagenet, dropout: 0.1}"]),
    "lite0-b10-88-thin": ("88 px, stem/block1a 24 of 32, block2a/2b half their expansion channels, 10 blocks", M4,
                          ["model.input_size=88", "model.args={blocks: 10, expand: [1.0, 0.5, 0.5], stem: 0.75, "
                           "weights: imagenet, dropout: 0.1}"]),
    "lite0-b10-96-allpruned": ("96 px, every block's expansion and the stem pruned to 1/2", M4,
                               ["model.input_size=96",
                                "model.args={blocks: 10, expand: 0.5, stem: 0.5, weights: imagenet, dropout: 0.1}"]),
    "lite0-b10-64-30ep": ("64 px full width with 30 fine-tuning epochs instead of 20", M4,
                          ["model.input_size=64", "model.args={blocks: 10, weights: imagenet, dropout: 0.1}",
                           "train.finetune.epochs=30"]),
    "lite0-b10-64-grey": ("64 px full width with grey input (data.channels 1)", M4,
                          ["model.input_size=64", "model.args={blocks: 10, weights: imagenet, dropout: 0.1}",
                           "data.channels=1"]),
    "mnv2-b10-96-pruned": ("MobileNetV2 1.0, 10 blocks, block2 expansion 1/3 and stem 1/2, 96 px", M4,
                           ["model.name=mobilenet_v2_mcu", "model.input_size=96",
                            "model.args={blocks: 10, expand: [1, 0.34], stem: 0.5, weights: imagenet, dropout: 0.1}"]),
}
_STAMP = re.compile(r"^(\d\d:\d\d:\d\d) ")


def _train_seconds(log: str) -> float | None:
    """Seconds from the first training-cache line to the last epoch line of a run's log."""
    start = end = None
    for line in log.splitlines():
        m = _STAMP.match(line)
        if not m:
            continue
        t = dt.datetime.strptime(m.group(1), "%H:%M:%S")
        if start is None and "train cache" in line:
            start = t
        if re.search(r"phase[12] epoch \d+/\d+ loss=", line):
            end = t
    if start is None or end is None:
        return None
    return float((end - start).total_seconds() % 86400)


def collect(run_dir: Path, log: str, *, lever: str, run_seconds: float | None = None) -> dict:
    """One row from a finished run directory and its log."""
    import yaml

    from edgecnn.mcu.latency import estimate_latency

    rep = json.loads((run_dir / "report.json").read_text())
    arts = rep["artifacts"]
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())

    def top1(name: str) -> float | None:
        a = arts.get(name) or {}
        return (a.get("metrics") or {}).get("accuracy")

    tflm = arts.get("model.int8.tflite@tflm") or {}
    mcu = tflm.get("mcu") or {}
    data = (run_dir / "model.int8.tflite").read_bytes() if (run_dir / "model.int8.tflite").exists() else None
    return {
        "lever": lever, "run_dir": str(run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir),
        "model": recipe["model"], "channels": recipe["data"].get("channels", 3),
        "epochs": {"head": recipe["train"]["head"]["epochs"], "finetune": recipe["train"]["finetune"]["epochs"]},
        "test_images": rep.get("test_images"),
        "top1": {"float": top1("model.keras"), "litert_int8": top1("model.int8.tflite"),
                 "tflm_int8": top1("model.int8.tflite@tflm")},
        "tflm_vs_litert": mcu.get("litert_agreement"),
        "int8_vs_float_agreement": (tflm.get("metrics") or {}).get("agreement"),
        "arena_bytes": mcu.get("arena_bytes"),
        "arena_kib": mcu.get("arena_bytes") and round(mcu["arena_bytes"] / 1024, 1),
        "flash_bytes": mcu.get("flash_bytes"),
        "flash_kib": mcu.get("flash_bytes") and round(mcu["flash_bytes"] / 1024, 1),
        "activation_peak": {k: (mcu.get("activation_peak") or {}).get(k) for k in ("bytes", "layer")},
        "fits": {p: (mcu.get("arena_bytes") or 1e12) / 1024 <= a and (mcu.get("flash_bytes") or 1e12) / 1024 <= f
                 for p, a, f in (("cortex-m4-256k", 192, 768), ("cortex-m7-1m", 768, 1536))},
        "latency_estimate": None if data is None else {
            p: {k: e[k] for k in ("ms", "macs", "core", "clock_mhz", "kind", "basis")}
            for p in ("cortex-m4-256k", "cortex-m7-1m") for e in [estimate_latency(data, p)]},
        "budget_violations": [str(v) for v in (rep.get("budgets") or {}).get("violations", [])],
        "train_seconds": _train_seconds(log), "run_seconds": run_seconds,
    }


ORDER = ["m4", "m7", "lite0-b10-64-full", "lite0-b10-64-30ep", "lite0-b10-64-grey", "lite0-b10-96-full",
         "lite0-b9-96-pruned", "lite0-b10-80-thin", "lite0-b10-88-thin", "lite0-b10-96-thin-early",
         "lite0-b10-96-allpruned", "mnv2-b10-96-pruned"]
DOC = ROOT / "docs" / "mcu.md"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def render_table(rows: dict) -> str:
    """The levers as a Markdown table (docs/mcu.md, between the levers markers)."""
    head = ("| row | what changes | net | top-1 float | LiteRT int8 | TFLM int8 | TFLM = LiteRT XNNPACK / reference | "
            "arena | flash (est.) | fits | est. latency M4 @100 MHz / M7 @480 MHz | training |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for key in [k for k in ORDER if k in rows] + [k for k in rows if k not in ORDER]:
        r = rows[key]
        m = r["model"]
        args = ", ".join(f"{k}={v}" for k, v in (m.get("args") or {}).items() if k not in ("weights", "dropout"))
        net = f"{m['name']}({args}) {m.get('input_size')} px" + (" grey" if r.get("channels") == 1 else "")
        agree = r.get("tflm_vs_litert") or {}
        ag = (f"{agree['xnnpack']['agreement']:.3f} / {agree['reference']['agreement']:.3f}"
              if agree.get("xnnpack") else "—")
        fits = ", ".join(p for p, ok in (r.get("fits") or {}).items() if ok) if r.get("arena_kib") else "—"
        lat = r.get("latency_estimate") or {}
        est = (f"{lat['cortex-m4-256k']['ms']:.0f} / {lat['cortex-m7-1m']['ms']:.0f} ms"
               if lat else "—")
        t = r.get("train_seconds")
        ep = r.get("epochs") or {}
        train = f"{ep.get('head')}+{ep.get('finetune')} epochs, {t / 60:.1f} min" if t else "—"
        withheld = " (int8 withheld)" if r["top1"].get("litert_int8") is None and r["top1"].get("float") else ""
        lines.append(f"| {key} | {r['lever']}{withheld} | {net} | {_pct(r['top1']['float'])} | "
                     f"{_pct(r['top1']['litert_int8'])} | {_pct(r['top1']['tflm_int8'])} | {ag} | "
                     f"{r.get('arena_kib') or '—'} KiB | {r.get('flash_kib') or '—'} KiB | {fits or 'none'} | {est} | "
                     f"{train} |")
    return "\n".join(lines)


def write_doc(rows: dict) -> None:
    text = DOC.read_text()
    start, end = "<!-- BEGIN levers -->", "<!-- END levers -->"
    if start in text and end in text:
        pre, rest = text.split(start, 1)
        _, post = rest.split(end, 1)
        DOC.write_text(f"{pre}{start}\n{render_table(rows)}\n{end}{post}")


def _machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0], "note": "2 cores shared with other jobs; training runs under nice 10"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=sorted(LEVERS), help="levers to run (default: all)")
    ap.add_argument("--collect", nargs="*", default=[], metavar="KEY=RUN_DIR:LOG",
                    help="add a finished run (its directory and the log of its `edgecnn run`) under KEY")
    args = ap.parse_args(argv)
    rows = json.loads(OUT.read_text())["rows"] if OUT.exists() else {}
    for item in args.collect:
        key, _, rest = item.partition("=")
        run_dir, _, log = rest.partition(":")
        lever = LEVERS[key][0] if key in LEVERS else key
        rows[key] = collect(Path(run_dir).resolve(), Path(log).read_text() if log else "", lever=lever)
        print(json.dumps(rows[key]["top1"]), rows[key]["arena_kib"], rows[key]["flash_kib"], flush=True)
    for key in ([] if args.collect and not args.only else (args.only or list(LEVERS))):
        what, recipe, sets = LEVERS[key]
        run_dir = RUNS / key
        cmd = [sys.executable, "-m", "edgecnn.cli", "run", recipe, "--output", str(run_dir)]
        for s in sets:
            cmd += ["--set", s]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        seconds = round(time.perf_counter() - t, 1)
        (run_dir / "run.log").write_text(proc.stdout + proc.stderr)
        if not (run_dir / "report.json").exists():
            print(f"{key}: no report (exit {proc.returncode}); see {run_dir / 'run.log'}", flush=True)
            continue
        rows[key] = collect(run_dir, proc.stdout + proc.stderr, lever=what, run_seconds=seconds)
        rows[key]["exit_code"] = proc.returncode
        print(key, json.dumps(rows[key]["top1"]), rows[key]["arena_kib"], rows[key]["flash_kib"], flush=True)
        OUT.write_text(json.dumps({"machine": _machine(), "rows": rows}, indent=2) + "\n")
    OUT.write_text(json.dumps({"machine": _machine(), "rows": rows}, indent=2) + "\n")
    write_doc(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
