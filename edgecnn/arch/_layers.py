"""Building blocks shared by the families: in-graph preprocessing, the classifier head, weight loading."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from edgecnn._tf import keras
from edgecnn.errors import EdgecnnError

# torchvision's ImageNet statistics, in 0-1 units; the graph converts from 0-255.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(x, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """(x/255 - mean)/std as a standard Keras layer, so every exporter and runtime sees it."""
    return keras.layers.Normalization(
        mean=[m * 255.0 for m in mean], variance=[(s * 255.0) ** 2 for s in std], name="normalize"
    )(x)


def classifier_head(x, num_classes: int, dropout: float = 0.2):
    """Global average pooling -> dropout -> dense logits ('classifier') -> softmax ('probs')."""
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.layers.Softmax(name="probs")(x)


def check_common(name: str, num_classes: int, input_size: int, min_size: int = 32) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise EdgecnnError(f"{name}: num_classes must be an integer >= 2. Received num_classes={num_classes!r}.")
    if not isinstance(input_size, int) or input_size < min_size:
        raise EdgecnnError(
            f"{name}: input_size must be an integer >= {min_size}. Received input_size={input_size!r}."
        )


def load_weights_file(model, weights: str | os.PathLike) -> None:
    """Load a weights file of the same backbone by layer name; the head may differ and is skipped."""
    path = Path(weights)
    if not path.is_file():
        raise EdgecnnError(
            f"weights file not found: {str(path)!r}. Pass weights=None, 'imagenet' where supported, "
            "or the path to an existing .h5 weights file of the same backbone."
        )
    try:
        model.load_weights(str(path), by_name=True, skip_mismatch=True)
    except Exception as e:  # h5py / Keras raise many types for a bad file
        raise EdgecnnError(f"could not read weights file {str(path)!r}: {e}. Expected a Keras .h5 weights file.") from e
