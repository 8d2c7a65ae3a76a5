"""QuantizeConfigs for the layers tfmot's default 8-bit scheme does not know, and the table deciding per layer.

tfmot's ``Default8BitQuantizeRegistry`` covers Conv2D, DepthwiseConv2D, Dense, Add, ReLU (any
``max_value``, so ReLU6 too), Softmax, pooling, padding and reshapes. The edge families here also
use layers it rejects:

==========================  =====================================================================
layer                       what QAT does with it here
==========================  =====================================================================
``Normalization``           :class:`OutputQuantizeConfig`: (x - mean) / std stays in the graph and
``Rescaling``               its output gets a learned int8 range; TFLite runs it as int8 SUB/MUL.
                            :func:`edgecnn.compress.fold_normalization` can instead fold it into
                            the first convolution (exact only without zero padding in between).
``Multiply``                :class:`OutputQuantizeConfig` (squeeze-excite gates, hard-swish x*g).
``Activation`` hard_sigmoid :class:`OutputQuantizeConfig` (tfmot knows relu/relu6/swish/gelu and
/ hard_swish / silu         the fixed-range sigmoid/tanh/softmax only).
standalone BatchNorm        :class:`OutputQuantizeConfig` (BN right after a conv/dense is folded by
                            tfmot's own transforms and needs nothing).
``AveragePooling2D``        :class:`NoOpQuantizeConfig`: TFLite's int8 AVERAGE_POOL_2D needs the same
                            scale in and out; tfmot gives its output a range of its own, and the
                            converter then fails ("violate the same scale constraint", DenseNet's
                            transition layers). Unquantised, it takes its input's scale.
``TFOpLambda`` / ``Lambda`` left float during QAT (tfmot cannot wrap TF-op layers); the TFLite
/ unknown custom layers     converter still quantises them from the representative dataset, so the
                            artifact stays full int8, only their ranges are not learned.
==========================  =====================================================================
"""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow_model_optimization as tfmot  # noqa: E402  (after edgecnn._tf sets TF_USE_LEGACY_KERAS)

from edgecnn._tf import keras
from edgecnn.quantize.converters import register_quantize_config

_Q = tfmot.quantization.keras
layers = keras.layers

# Activations tfmot's Default8BitActivationQuantizeConfig accepts (it raises on anything else).
TFMOT_ACTIVATIONS = frozenset({"relu", "swish", "gelu", "relu6", "linear", "softmax", "sigmoid", "tanh"})
# Activations we can quantise by giving their output a learned range.
OUTPUT_RANGE_ACTIVATIONS = frozenset({"hard_sigmoid", "hard_swish", "hard_silu", "silu", "elu", "selu",
                                      "softplus", "softsign", "exponential", "mish"})
OUTPUT_RANGE_LAYERS = (layers.Normalization, layers.Rescaling, layers.Multiply, layers.Subtract,
                       layers.Maximum, layers.Minimum, layers.Average)
# Layers that precede a BatchNormalization tfmot folds (Conv2DBatchNormQuantize and friends).
_BN_FOLD_PARENTS = (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)


# Registered so that edgecnn.quantize.quantize_scope() (every QAT clone, load and conversion) knows them.
@register_quantize_config
class OutputQuantizeConfig(_Q.QuantizeConfig):
    """No weights quantised; the output gets an 8-bit asymmetric moving-average range (learned in QAT)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_Q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                     narrow_range=False)]

    def get_config(self):
        return {}


@register_quantize_config
class NoOpQuantizeConfig(OutputQuantizeConfig):
    """Nothing quantised: the layer runs float in the QAT model (used for layers asked to stay float)."""

    def get_output_quantizers(self, layer):
        return []


@dataclass(frozen=True)
class LayerPlan:
    """How one layer is treated by QAT: ``'default'`` (tfmot's own), ``'output'``, ``'same-scale'``, ``'float'``
    or ``'skip'``."""

    name: str
    type: str
    action: str
    reason: str = ""


def _activation_name(layer) -> str:
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", type(fn).__name__)


def _inbound_layers(layer) -> list:
    out = []
    for node in layer.inbound_nodes:
        inb = node.inbound_layers
        out.extend(inb if isinstance(inb, list) else [inb])
    return out


def plan_layer(layer, registry=None) -> LayerPlan:
    """Decide how QAT treats ``layer`` (see the module table)."""
    registry = registry or _Q.default_8bit.Default8BitQuantizeRegistry()
    name, kind = layer.name, type(layer).__name__
    if isinstance(layer, layers.InputLayer):
        return LayerPlan(name, kind, "skip")
    if isinstance(layer, keras.Model):
        return LayerPlan(name, kind, "float", "a nested model; call edgecnn.compress.flatten(model) first")
    if isinstance(layer, layers.Activation):
        act = _activation_name(layer)
        if act in TFMOT_ACTIVATIONS:
            return LayerPlan(name, kind, "default")
        if act in OUTPUT_RANGE_ACTIVATIONS:
            return LayerPlan(name, kind, "output", f"activation {act!r}: output range learned")
        return LayerPlan(name, kind, "float", f"activation {act!r} is unknown to tfmot; left float, its range comes "
                                              "from the representative dataset at conversion")
    if isinstance(layer, layers.BatchNormalization):
        parents = _inbound_layers(layer)
        if parents and all(isinstance(p, _BN_FOLD_PARENTS) for p in parents):
            return LayerPlan(name, kind, "default")
        return LayerPlan(name, kind, "output", "BatchNormalization not after a conv/dense: output range learned")
    if isinstance(layer, layers.AveragePooling2D):
        return LayerPlan(name, kind, "same-scale", "int8 average pooling keeps its input's scale (TFLite)")
    if isinstance(layer, OUTPUT_RANGE_LAYERS):
        return LayerPlan(name, kind, "output", f"{kind} is unknown to tfmot: output range learned")
    if registry.supports(layer):
        return LayerPlan(name, kind, "default")
    if kind == "TFOpLambda":
        fn = layer.get_config().get("function", "?")
        return LayerPlan(name, kind, "float",
                         f"TF op {fn!r} as a layer: tfmot cannot wrap it; left float in QAT, quantised from the "
                         "representative dataset at conversion. Fix: write it with Keras layers (Add, Multiply, "
                         "ReLU, Activation) so QAT learns its range")
    if kind == "Lambda":
        return LayerPlan(name, kind, "float",
                         "Lambda layer: tfmot cannot see inside it; left float in QAT, quantised from the "
                         "representative dataset at conversion. Fix: replace it with Keras layers, or pass "
                         "quantize_configs={name: QuantizeConfig} to quantize_aware")
    return LayerPlan(name, kind, "float",
                     f"{kind} has no tfmot QuantizeConfig; left float in QAT. Fix: pass "
                     f"quantize_configs={{{name!r}: <QuantizeConfig>}} to quantize_aware")
