"""Weight clustering (tfmot): every kernel keeps only ``clusters`` distinct values (shared centroids).

    clustered = cluster(model, clusters=16)
    fine_tune_clustered(clustered, train, val, epochs=1, lr=1e-5)
    plain = strip_clusters(clustered)
    unique_values(plain)            # {"block1_project": 16, ...}

On its own clustering buys size after compression (16 values = 4-bit indices, gzip finds them);
combined with QAT (``quantize_aware(plain, scheme='cqat')``) the int8 artifact keeps the centroids.
``preserve_sparsity=True`` keeps a pruned model's zeros (sparsity-preserving clustering).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import tensorflow_model_optimization as tfmot  # noqa: E402  (after edgecnn._tf)

from edgecnn._tf import keras
from edgecnn.compress import _fit
from edgecnn.compress._flatten import flatten
from edgecnn.errors import EdgecnnError, did_you_mean

_C = tfmot.clustering.keras
_INIT = {
    "kmeans++": _C.CentroidInitialization.KMEANS_PLUS_PLUS,
    "linear": _C.CentroidInitialization.LINEAR,
    "density": _C.CentroidInitialization.DENSITY_BASED,
    "random": _C.CentroidInitialization.RANDOM,
}
INITS = tuple(_INIT)
# tfmot clusters Conv2D and Dense kernels (DepthwiseConv2D is registered with no clusterable weights).
CLUSTERABLE = (keras.layers.Conv2D, keras.layers.Dense)


def _kernel(layer):
    for w in layer.weights:
        if w.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel"):
            return w
    return None


def cluster(model, *, clusters: int = 16, init: str = "kmeans++", preserve_sparsity: bool = False,
            exclude: Iterable[str] = ()):
    """A new model whose Conv2D/Dense kernels are clustered; the argument is not modified.

    Args:
        model: a trained functional ``tf_keras`` model (nested backbones are flattened first).
        clusters: distinct values per kernel, >= 2 (16 is the usual choice; 8 trades accuracy for size).
        init: centroid initialisation: ``'kmeans++'``, ``'linear'``, ``'density'`` or ``'random'``.
        preserve_sparsity: keep zeros at zero (cluster a pruned model without losing its sparsity).
        exclude: layer names to leave unclustered (a kernel with fewer weights than ``clusters`` always is).

    Returns:
        The model with clustering wrappers (uncompiled); fine-tune, then :func:`strip_clusters`.

    Raises:
        EdgecnnError: bad ``clusters``/``init``, unknown layer names, or nothing to cluster.
    """
    if not isinstance(clusters, int) or clusters < 2:
        raise EdgecnnError(f"clusters must be an integer >= 2; received clusters={clusters!r}.")
    if init not in _INIT:
        raise EdgecnnError(f"init must be one of {list(INITS)}; received init={init!r}.{did_you_mean(init, INITS)}")
    flat = flatten(model)
    names = {layer.name for layer in flat.layers}
    exclude = set(exclude)
    unknown = sorted(exclude - names)
    if unknown:
        raise EdgecnnError(f"exclude names layer(s) {unknown} not in model {flat.name!r}."
                           f"{did_you_mean(unknown[0], names)}")
    base = _fit.copy_model(flat)
    targets = {layer.name for layer in base.layers
               if type(layer) in CLUSTERABLE and layer.name not in exclude
               and _kernel(layer) is not None and int(np.prod(_kernel(layer).shape)) > clusters}
    if not targets:
        raise EdgecnnError(f"cluster: model {flat.name!r} has no Conv2D/Dense kernel with more "
                           f"than {clusters} weights to cluster.")
    kwargs = {"number_of_clusters": clusters, "cluster_centroids_init": _INIT[init]}
    if preserve_sparsity:
        kwargs["preserve_sparsity"] = True

    def wrap(layer):
        return _C.cluster_weights(layer, **kwargs) if layer.name in targets else layer

    with _C.cluster_scope():
        return keras.models.clone_model(base, clone_function=wrap)


def fine_tune_clustered(model, train: Any, val: Any = None, *, epochs: int = 1, lr: float = 1e-5,
                        batch_size: int = 32, seed: int = 0,
                        train_batchnorm: bool = False, teacher=None, adapt_bn: bool = True) -> dict[str, list[float]]:
    """Fine-tune a :func:`cluster`-ed model (the centroids train); returns the Keras history.

    ``adapt_bn`` re-estimates the BatchNorm statistics after every epoch (see :func:`fine_tune_pruned`).
    """
    return _fit.fit(model, train, val, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                    train_batchnorm=train_batchnorm, teacher=teacher, adapt_bn=adapt_bn)


def strip_clusters(model):
    """Remove the clustering wrappers: a plain model whose kernels hold only the centroid values."""
    return _C.strip_clustering(model)


def unique_values(model) -> dict[str, int]:
    """Distinct values in each Conv2D/Dense kernel, keyed by layer name."""
    out = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if type(inner) in CLUSTERABLE:
            k = _kernel(inner)
            if k is not None:
                out[inner.name] = int(np.unique(k.numpy()).size)
    return out


__all__ = ["cluster", "fine_tune_clustered", "strip_clusters", "unique_values", "INITS"]
