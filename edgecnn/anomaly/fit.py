"""Fitting the statistics of the two methods on good images only, streaming over batches of patch features.

Memory does not grow with every patch of every image held at once:

* **PaDiM** (Defard et al. 2020, "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
  Localization"): running sums ``sum f`` and ``sum f f^T`` per position over a random subset of ``d``
  channels: ``P * d * d`` float64, whatever the number of images (Welford is not needed in float64 at
  these counts). The covariance gets ``0.01 I`` as in the paper; its Cholesky factor is inverted once.
* **PatchCore** (Roth et al. 2022, "Towards Total Recall in Industrial Anomaly Detection"): greedy
  k-center coreset selection on a random projection of the patches to 32 dimensions (the paper's
  Johnson-Lindenstrauss trick), among at most ``MAX_CANDIDATES`` patches drawn at random (each greedy
  step reads every candidate: 276k patches of 300 images made it minutes on 2 cores). Pass 1 keeps only
  those candidates' projections; pass 2 streams the features again and keeps the chosen patches only.
  The bank holds ``fraction`` of *all* training patches.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from edgecnn.errors import EdgecnnError

__all__ = ["fit_padim", "fit_patchcore", "greedy_coreset"]

Batches = Callable[[], Iterable[np.ndarray]]
"""Returns a fresh iterator of (B, g, g, C) float32 feature batches (called once per pass)."""

PROJECTION_DIMS = 32
MAX_CANDIDATES = 50_000
PADIM_EPS = 0.01


def fit_padim(batches: Batches, *, dims: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-position Gaussians over ``dims`` random channels; returns ``select`` (C, d), ``mean`` (P, d),
    ``inv_chol`` (P, d, d) with ``inv_chol @ (f - mean)`` whitening the features at each position."""
    s1 = s2 = select = None
    n = 0
    for f in batches():
        b, g1, g2, c = f.shape
        if select is None:
            d = min(dims, c)
            idx = np.sort(np.random.default_rng(seed).choice(c, d, replace=False))
            select = np.zeros((c, d), np.float32)
            select[idx, np.arange(d)] = 1.0
            s1 = np.zeros((g1 * g2, d))
            s2 = np.zeros((g1 * g2, d, d))
        x = (f.reshape(b, g1 * g2, c) @ select).astype(np.float64)  # (B, P, d)
        s1 += x.sum(0)
        s2 += np.einsum("bpi,bpj->pij", x, x)
        n += b
    if n < 2:
        raise EdgecnnError(f"PaDiM needs at least 2 good training images to estimate a covariance; received {n}.")
    mean = s1 / n
    cov = (s2 - n * np.einsum("pi,pj->pij", mean, mean)) / (n - 1) + PADIM_EPS * np.eye(mean.shape[1])
    chol = np.linalg.cholesky(cov)
    inv_chol = np.linalg.inv(chol)
    return {"select": select, "mean": mean.astype(np.float32), "inv_chol": inv_chol.astype(np.float32)}


def greedy_coreset(points: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices of ``k`` points chosen by greedy k-center (each pick is the point farthest from those chosen)."""
    n = len(points)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    chosen = np.empty(k, np.int64)
    chosen[0] = rng.integers(n)
    points = np.ascontiguousarray(points, np.float32)
    sq = (points ** 2).sum(1)
    dist = sq - 2 * points @ points[chosen[0]] + sq[chosen[0]]
    new = np.empty_like(dist)
    for i in range(1, k):
        chosen[i] = c = int(np.argmax(dist))
        np.matmul(points, points[c], out=new)  # in place: this loop runs k times over every point
        new *= -2
        new += sq
        new += sq[c]
        np.minimum(dist, new, out=dist)
    return chosen


def fit_patchcore(batches: Batches, *, fraction: float, seed: int = 0,
                  min_bank: int = 16) -> dict[str, np.ndarray]:
    """A coreset memory bank of ``fraction`` of the training patches; returns ``bank`` (K, C)."""
    rng = np.random.default_rng(seed)
    proj = None
    parts, total = [], 0
    for f in batches():  # pass 1: projections only (of a random share when there are many patches)
        flat = f.reshape(-1, f.shape[-1])
        if proj is None:
            proj = rng.normal(size=(flat.shape[1], PROJECTION_DIMS)).astype(np.float32) / np.sqrt(PROJECTION_DIMS)
        parts.append(flat @ proj)
        total += len(flat)
    if not parts:
        raise EdgecnnError("PatchCore needs at least one good training image; received none.")
    projected = np.concatenate(parts)
    candidates = np.arange(total)
    if total > MAX_CANDIDATES:
        candidates = np.sort(rng.choice(total, MAX_CANDIDATES, replace=False))
    k = max(min_bank, int(round(fraction * total)))
    chosen = np.sort(candidates[greedy_coreset(projected[candidates], k, seed)])
    bank, start, j = [], 0, 0
    for f in batches():  # pass 2: keep the chosen patches' full features
        flat = f.reshape(-1, f.shape[-1])
        end = start + len(flat)
        while j < len(chosen) and chosen[j] < end:
            bank.append(flat[chosen[j] - start])
            j += 1
        start = end
    return {"bank": np.stack(bank).astype(np.float32)}
