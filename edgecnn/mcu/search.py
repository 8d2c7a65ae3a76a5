"""A search over what fits a microcontroller (the shape of Edge Impulse's EON Tuner, offline).

For a named profile (``cortex-m4-256k``, ``cortex-m7-1m``, ...) :func:`search_mcu` takes candidate
backbones x input sizes x widths and

1. **drops those that do not fit before training any**: each candidate is built untrained, converted to full
   int8 with a random representative set (tensor sizes do not depend on the weights) and its TFLite Micro
   arena found by bisection with the real interpreter; flash is the model plus the kernels' estimate
   (:func:`edgecnn.runtime.tflm_runner.mcu_figures`' rules). A candidate over the profile's ``max_arena_kb``
   or ``max_flash_kb`` is never trained;
2. trains the rest briefly (:func:`edgecnn.train.train`, the recipe's own training with fewer epochs) and
   measures their val top-1;
3. returns the front: val top-1, arena, flash and the estimated latency (:mod:`edgecnn.mcu.latency`) of every
   candidate, and the pick (best val top-1; the faster on a tie within half a point).

When no candidate fits, :class:`NoCandidateFits` says which constraint none met, with the smallest figure
seen against the limit.

Example:
    >>> result = search_mcu("data/defects", "cortex-m4-256k", out_dir="export/search")   # doctest: +SKIP
    >>> result.pick.label, result.pick.val_top1                                      # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import EdgecnnError, did_you_mean

__all__ = ["McuCandidate", "CandidateResult", "SearchResult", "NoCandidateFits", "DEFAULT_CANDIDATES",
           "fit_figures", "search_mcu", "profile_limits", "mcu_recipe", "candidate_of"]

log = logging.getLogger("edgecnn.mcu")
SEARCH_JSON = "mcu_search.json"
TIE_TOP1 = 0.005   # within half a point of the best val top-1, the faster candidate is picked


@dataclass(frozen=True)
class McuCandidate:
    """One point of the grid: a registered model, its input size and channels, and its builder arguments."""

    model: str
    input_size: int
    args: dict[str, Any] = field(default_factory=dict)
    channels: int = 3

    @property
    def label(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.args.items() if k not in ("weights", "dropout"))
        grey = " grey" if self.channels == 1 else ""
        return f"{self.model}({args}) {self.input_size}px{grey}"


def _lite(size: int, **args) -> McuCandidate:
    return McuCandidate("efficientnet_lite0_mcu", size, {**args, "weights": "imagenet"})


def _mnv2(size: int, **args) -> McuCandidate:
    return McuCandidate("mobilenet_v2_mcu", size, {**args, "weights": "imagenet"})


# Pretrained backbones x input sizes x widths: truncation (blocks), pruning of the early expansion layers (which
# set the arena at 80-96 px) and input size, for 256 KB .. 1 MB parts. dsconv 0.25 (from scratch) closes the list.
DEFAULT_CANDIDATES: tuple[McuCandidate, ...] = (
    _lite(64, blocks=10),
    _lite(80, blocks=10, expand=[1, 0.67, 0.67]),
    _lite(88, blocks=10, expand=[1, 0.5, 0.5], stem=0.75),
    _lite(96, blocks=9, expand=[1, 0.5, 0.5]),
    _lite(96, blocks=10, expand=[1, 0.34, 0.5], stem=0.75),
    _lite(96, blocks=12),
    _lite(96, blocks=10),
    _mnv2(96, blocks=10, expand=[1, 0.34], stem=0.5),
    _mnv2(96, blocks=13),
    McuCandidate("dsconv", 96, {"alpha": 0.25}),
)


@dataclass
class CandidateResult:
    """What the search learnt about one candidate (JSON-ready with :func:`dataclasses.asdict`)."""

    label: str
    candidate: dict
    arena_bytes: int
    flash_bytes: int
    model_bytes: int
    fits: bool
    over: list[str]                       # the limits it breaks: "arena", "flash"
    latency: dict                         # edgecnn.mcu.latency.estimate_latency (an estimate)
    trained: bool = False
    val_top1: float | None = None
    train_seconds: float | None = None


@dataclass
class SearchResult:
    profile: str
    limits_kb: dict[str, float]
    rows: list[CandidateResult]
    pick: CandidateResult
    seconds: float

    def to_json(self) -> dict:
        return {"profile": self.profile, "limits_kb": self.limits_kb, "pick": self.pick.label,
                "seconds": round(self.seconds, 1), "rows": [asdict(r) for r in self.rows],
                "note": "arena measured with TFLite Micro on an untrained int8 conversion (sizes do not depend on the "
                        "weights); flash = model + estimated kernels; latency is an estimate (see its basis); val_top1 "
                        "after the search's brief training, float"}

    def table(self) -> str:
        """The front as plain text, best first."""
        rows = sorted(self.rows, key=lambda r: (not r.trained, -(r.val_top1 or 0), r.latency.get("ms", 0)))
        lines = [f"{'candidate':<58} {'arena KiB':>9} {'flash KiB':>9} {'est. ms':>8} {'val top-1':>9}"]
        for r in rows:
            top1 = f"{r.val_top1:.3f}" if r.val_top1 is not None else ("over " + "+".join(r.over) if r.over else "-")
            mark = "  <- pick" if r is self.pick else ""
            lines.append(f"{r.label:<58} {r.arena_bytes / 1024:>9.1f} {r.flash_bytes / 1024:>9.1f} "
                         f"{r.latency.get('ms', float('nan')):>8.1f} {top1:>9}{mark}")
        return "\n".join(lines)


class NoCandidateFits(EdgecnnError):
    """No candidate fits the profile; the message says which constraint none met."""


def profile_limits(profile: str) -> dict[str, float]:
    """``max_arena_kb`` and ``max_flash_kb`` of an MCU profile (the share the model may use)."""
    from edgecnn.budget_schema import MCU_PROFILES

    if profile not in MCU_PROFILES:
        raise EdgecnnError(f"--target must be an MCU profile: one of {', '.join(MCU_PROFILES)}. Received "
                           f"{profile!r}.{did_you_mean(profile, MCU_PROFILES)}")
    return MCU_PROFILES[profile].limits()


def _build(c: McuCandidate, num_classes: int, weights: bool):
    from edgecnn.arch import create_model, get_model_entry
    from edgecnn.train import with_input_channels

    args = dict(c.args)
    if not weights and "weights" in args:
        args["weights"] = None
    if "input_size" in get_model_entry(c.model).defaults:
        args["input_size"] = c.input_size
    return with_input_channels(create_model(c.model, num_classes=num_classes, **args), c.channels)


def fit_figures(c: McuCandidate, num_classes: int, target: str) -> dict:
    """Arena, flash and estimated latency of a candidate's int8 graph, from an untrained build.

    The model is built without weights, its BatchNorm statistics and head set from 32 random images (so the int8
    ranges are sane: :func:`edgecnn.arch._small.calibrate_for_comparison`), converted to full int8 with those
    images and measured in TFLite Micro. Sizes depend on the graph only.
    """
    from edgecnn.arch._small import calibrate_for_comparison
    from edgecnn.mcu.latency import estimate_latency
    from edgecnn.quantize.tflite_int8 import tflite_int8
    from edgecnn.runtime.tflm_runner import find_arena_size, kernel_bytes_estimate, model_ops

    model = _build(c, num_classes, weights=False)
    images = np.random.default_rng(0).uniform(0, 255, (32, c.input_size, c.input_size, c.channels)).astype("float32")
    calibrate_for_comparison(model, images)
    data = tflite_int8(model, images)
    ops = list(dict.fromkeys(u.op for u in model_ops(data)))
    return {"arena_bytes": find_arena_size(data, c.label), "flash_bytes": len(data) + kernel_bytes_estimate(ops),
            "model_bytes": len(data), "latency": estimate_latency(data, target)}


def _none_fits_message(profile: str, limits: dict[str, float], rows: list[CandidateResult]) -> str:
    arena_ok = [r for r in rows if "arena" not in r.over]
    flash_ok = [r for r in rows if "flash" not in r.over]
    smallest_arena = min(rows, key=lambda r: r.arena_bytes)
    smallest_flash = min(rows, key=lambda r: r.flash_bytes)
    unmet = []
    if not arena_ok:
        unmet.append(f"arena: the smallest is {smallest_arena.arena_bytes / 1024:.1f} KiB ({smallest_arena.label}), "
                     f"over max_arena_kb {limits['max_arena_kb']:g}")
    if not flash_ok:
        unmet.append(f"flash: the smallest is {smallest_flash.flash_bytes / 1024:.1f} KiB ({smallest_flash.label}), "
                     f"over max_flash_kb {limits['max_flash_kb']:g}")
    if not unmet:
        unmet.append("arena and flash together: every candidate within the arena is over the flash limit and the "
                     "other way round")
    return (f"no candidate fits {profile} (of {len(rows)} tried): " + "; ".join(unmet)
            + ". Fix: a larger target (--target), a smaller input size, or candidates with fewer blocks / channels.")


def mcu_recipe(c: McuCandidate, data: str, profile: str, *, name: str, head_epochs: int = 3,
               finetune_epochs: int = 20, batch_size: int = 32, augment: dict | None = None) -> dict:
    """A recipe (as a dict for :func:`edgecnn.config.recipe_from_dict`) that trains ``c`` and gates it on ``profile``.

    The training of ``models/mcu-m4-256k.yaml``: a head on the frozen features, then every block with BatchNorm at
    0.3x the head's rate (cosine); full int8 held by the chooser; TFLite Micro evaluation; firmware files.
    """
    pretrained = c.args.get("weights") == "imagenet"
    return {
        "name": name,
        "description": f"{c.label} for {profile}, chosen by edgecnn's MCU search",
        "data": {"path": data, "batch_size": batch_size, "channels": c.channels,
                 "augment": augment or {"flip": "none", "rotation": 0.0, "zoom": 0.1, "contrast": 0.1}},
        "model": {"name": c.model, "input_size": c.input_size, "args": dict(c.args)},
        "train": {"seed": 0, "optimizer": "adam",
                  "freeze_backbone": "yes" if pretrained else "no",
                  "head": {"epochs": head_epochs if pretrained else 0, "lr": 0.003},
                  "finetune": {"blocks": 99, "epochs": finetune_epochs, "lr_factor": 0.3 if pretrained else 1.0,
                               "schedule": "cosine", "train_batchnorm": True},
                  "early_stopping_patience": 5},
        "export": {"formats": ["tflite-fp32", "tflite-int8", "tflm-c"], "calibration_images": 200},
        "compress": {"max_accuracy_drop": 0.02, "min_agreement": 0.95, "prefer": "size",
                     "routes": ["tflite-int8", "tflite-int8-percentile", "tflite-int8-qat"], "runtimes": ["litert"]},
        "evaluate": {"warmup": 5, "runs": 50, "threads": [1], "runtimes": ["tflm"]},
        "budgets": [{"name": profile, "artifacts": ["model.int8.tflite", "model.int8.tflm"], "profile": profile}],
    }


def _val_top1(model, ds, size: int, channels: int) -> float:
    from edgecnn.data.decoded_split import decode_images

    paths = ds.paths("val")
    x = decode_images(paths, size, channels)
    pred = np.argmax(model.predict(x, batch_size=64, verbose=0), axis=1)
    return float(np.mean(pred == ds.labels("val")))


def search_mcu(data: str | os.PathLike, profile: str, *, out_dir: str | os.PathLike,
               candidates: tuple[McuCandidate, ...] | None = None, epochs: int = 6, head_epochs: int = 2,
               batch_size: int = 32, augment: dict | None = None, channels: int | None = None) -> SearchResult:
    """Find the candidates that fit ``profile`` (before training), train those briefly, and pick one.

    Args:
        data: a class-per-folder image folder (any layout :func:`edgecnn.data.folders.discover` reads).
        profile: an MCU profile of :data:`edgecnn.budget_schema.MCU_PROFILES`.
        out_dir: where each candidate trains (``<out_dir>/<n>/``) and ``mcu_search.json`` is written.
        candidates: the grid (default :data:`DEFAULT_CANDIDATES`).
        epochs: fine-tuning epochs of the brief training (the head gets ``head_epochs`` first).
        channels: force every candidate to 1 (grey) or 3 input channels.

    Returns:
        The front and the pick; also written to ``<out_dir>/mcu_search.json``.

    Raises:
        NoCandidateFits: no candidate is within the profile's arena and flash; the message names the constraint.
        EdgecnnError: an unknown profile or an unreadable folder.
    """
    from edgecnn._io import write_json
    from edgecnn.config import recipe_from_dict
    from edgecnn.data.folders import discover
    from edgecnn.train import train

    t0 = time.perf_counter()
    limits = profile_limits(profile)
    grid = tuple(candidates or DEFAULT_CANDIDATES)
    if channels is not None:
        grid = tuple(replace(c, channels=channels) for c in grid)
    ds = discover(Path(data), check_images=False, channels=grid[0].channels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[CandidateResult] = []
    for c in grid:
        f = fit_figures(c, len(ds.classes), profile)
        over = [k for k, v in (("arena", f["arena_bytes"]), ("flash", f["flash_bytes"]))
                if v / 1024 > limits[f"max_{k}_kb"]]
        rows.append(CandidateResult(c.label, asdict(c), f["arena_bytes"], f["flash_bytes"], f["model_bytes"],
                                    not over, over, f["latency"]))
        log.info("mcu search: %-58s arena %7.1f KiB flash %7.1f KiB est. %7.1f ms %s", c.label,
                 f["arena_bytes"] / 1024, f["flash_bytes"] / 1024, f["latency"]["ms"],
                 "fits" if not over else "over " + "+".join(over) + ": not trained")
    if not any(r.fits for r in rows):
        write_json(out / SEARCH_JSON, {"profile": profile, "limits_kb": limits, "pick": None,
                                       "rows": [asdict(r) for r in rows]})
        raise NoCandidateFits(_none_fits_message(profile, limits, rows))
    for i, (c, r) in enumerate(zip(grid, rows)):
        if not r.fits:
            continue
        raw = mcu_recipe(c, str(data), profile, name=f"search-{i}", head_epochs=head_epochs,
                         finetune_epochs=epochs, batch_size=batch_size, augment=augment)
        raw["train"]["early_stopping_patience"] = max(epochs, 1)
        recipe = recipe_from_dict(raw, source=f"mcu search candidate {c.label}")
        t = time.perf_counter()
        result = train(recipe, ds, out / str(i))
        r.train_seconds = round(time.perf_counter() - t, 1)
        r.val_top1 = _val_top1(result.model, ds, c.input_size, c.channels)
        r.trained = True
        log.info("mcu search: %-58s val top-1 %.3f (%.0f s)", c.label, r.val_top1, r.train_seconds)
    trained = [r for r in rows if r.trained]
    best = max(r.val_top1 or 0.0 for r in trained)
    pick = min((r for r in trained if (r.val_top1 or 0.0) >= best - TIE_TOP1), key=lambda r: r.latency["ms"])
    res = SearchResult(profile, limits, rows, pick, time.perf_counter() - t0)
    write_json(out / SEARCH_JSON, res.to_json())
    log.info("mcu search for %s (arena <= %g KiB, flash <= %g KiB; latency estimated, not measured):\n%s",
             profile, limits["max_arena_kb"], limits["max_flash_kb"], res.table())
    return res


def candidate_of(row: CandidateResult) -> McuCandidate:
    """The candidate a result row describes."""
    return McuCandidate(**row.candidate)
