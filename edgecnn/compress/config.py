"""``CompressConfig``: the recipe's ``compress:`` section (defined with the rest of the recipe in
:mod:`edgecnn.config`, re-exported here for the compression API).

    compress:
      enabled: true
      max_accuracy_drop: 0.005        # top-1 on the val split, vs the float model
      prune: {enabled: true, target_sparsity: 0.5, epochs: 2}
      cluster: {enabled: false}
      qat: {epochs: 2, lr: 1.0e-4, distill: true}
      routes: [tflite-int8, onnx-int8-minmax, onnx-int8-minmax-pc, onnx-int8-percentile,
               onnx-int8-entropy, tflite-int8-qat, tflite-int8-mixed, onnx-int8-mixed]
"""
from edgecnn.config import ROUTE_NAMES, ClusterConfig, CompressConfig, PruneConfig, QatConfig

__all__ = ["ROUTE_NAMES", "ClusterConfig", "CompressConfig", "PruneConfig", "QatConfig"]
