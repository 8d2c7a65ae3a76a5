"""The decision threshold from validation scores, and the scale that maps it to 0.5.

* ``quantile``: good validation images only: the ``q`` quantile of their raw scores (q = 0.99: about
  1 good image in 100 is flagged). What a line has on day one: no defects yet.
* ``f1``: good and defective validation images: the raw score that maximises F1 (midway between the two
  scores it separates).
* ``auto``: ``f1`` when the validation split holds defects, else ``quantile``.

The model's outputs are ``(raw - threshold) / scale + 0.5`` with ``scale`` the spread (max - min) of
the validation scores, so 0.5 means "at threshold" and the val set spans about one unit.
"""
from __future__ import annotations

import numpy as np

from edgecnn.errors import EdgecnnError

__all__ = ["choose_threshold"]


def _best_f1(raw: np.ndarray, defect: np.ndarray) -> tuple[float, float]:
    order = np.argsort(-raw)
    s, d = raw[order], defect[order]
    tp = np.cumsum(d)
    fp = np.cumsum(~d)
    f1 = 2 * tp / (tp + fp + d.sum())
    # only cut between distinct scores: everything at index <= i is flagged
    valid = np.append(s[:-1] > s[1:], True)
    i = int(np.argmax(np.where(valid, f1, -1)))
    thr = (s[i] + s[i + 1]) / 2 if i + 1 < len(s) else s[i] - 1e-6
    return float(thr), float(f1[i])


def choose_threshold(raw: np.ndarray, defect: np.ndarray, *, rule: str = "auto", quantile: float = 0.99) -> dict:
    """The threshold and scale from raw validation scores.

    Args:
        raw: raw (unnormalised) image scores of the validation images.
        defect: True for defective validation images.
        rule: ``auto``, ``quantile`` or ``f1`` (module docstring).
        quantile: the good-score quantile for ``quantile``.

    Returns:
        ``{"rule", "threshold", "scale", "quantile"|"val_f1", "val_good", "val_defects"}``.

    Raises:
        EdgecnnError: no good validation images, or ``f1`` without defective ones.
    """
    raw, defect = np.asarray(raw, np.float64), np.asarray(defect, bool)
    n_bad = int(defect.sum())
    n_good = int((~defect).sum())
    if n_good == 0:
        raise EdgecnnError("the validation split has no good images; the threshold needs some (add val/good/ "
                           "images, or let edgecnn hold out a share of train/good with anomaly.val_fraction).")
    used = rule if rule != "auto" else ("f1" if n_bad else "quantile")
    if used == "f1" and not n_bad:
        raise EdgecnnError("anomaly.threshold: f1 needs defective validation images and val/ has none. Use "
                           "threshold: quantile (a quantile of good scores) or add val/<defect>/ images.")
    out: dict = {"rule": used, "val_good": n_good, "val_defects": n_bad}
    if used == "quantile":
        out["threshold"] = float(np.quantile(raw[~defect], quantile))
        out["quantile"] = quantile
    else:
        out["threshold"], out["val_f1"] = _best_f1(raw, defect)
    spread = float(raw.max() - raw.min())
    out["scale"] = spread if spread > 1e-6 else 1.0
    return out
