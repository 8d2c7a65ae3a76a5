"""Fact table: the ``tflite::MicroMutableOpResolver`` method that registers each TFLite builtin op.

Read from TensorFlow Lite Micro's own header, not derived from the op name (CamelCase gets ``PADV2``
and ``UNIDIRECTIONAL_SEQUENCE_LSTM`` wrong: the header spells them ``AddPadV2`` and
``AddUnidirectionalSequenceLSTM``):

- file: ``tensorflow/lite/micro/micro_mutable_op_resolver.h``
- repository: https://github.com/tensorflow/tflite-micro
- version: the 2025 revision of that file ("Copyright 2025" header, ``TFLMRegistration`` API, 98
  builtin ``Add*`` methods ending in ``AddZerosLike``), the newest revision our source search held; the
  search did not name its commit. The pinned wheel, ``tflite-micro==0.dev20261023182759``, is built
  from commit 8f6596d (its METADATA) and ships no C++ headers, so that commit's copy was not read.
- two ops the pinned wheel has kernels for came after that revision: ``DYNAMIC_UPDATE_SLICE`` and
  ``REDUCE_ALL``. Their method names, ``AddDynamicUpdateSlice`` and ``AddReduceAll``, are from firmware
  that calls them on a newer upstream resolver, not from the header itself (marked below).

``tests/test_tflm.py`` checks the keys against the pinned wheel: they are exactly the builtin ops whose
kernels (``Register_<OP>()``) its ``_runtime.so`` links, the interpreter the ``tflm`` runtime measures.
A builtin op missing here has no resolver method in TFLM: :func:`edgecnn.export.tflm_c.resolver_method`
refuses it by name. Ops the header adds with ``AddCustom`` (``TFLite_Detection_PostProcess``,
``CIRCULAR_BUFFER``, the signal library, Ethos-U) are custom ops and not listed.

To update: read the header at the commit the new pinned wheel names in its METADATA, copy each
``AddBuiltin(BuiltinOperator_<OP>, ...)`` method here, and run ``tests/test_tflm.py``.
"""
from __future__ import annotations

TFLM_HEADER = "tensorflow/lite/micro/micro_mutable_op_resolver.h"
TFLM_REPOSITORY = "tensorflow/tflite-micro"
TFLM_HEADER_VERSION = ("2025 revision; its ops checked against the tflite-micro 0.dev20261023182759 wheel, "
                       "commit 8f6596d")

RESOLVER_METHODS: dict[str, str] = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice",   # after the 2025 revision (see above)
    "ELU": "AddElu",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MAXIMUM": "AddMaximum",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MIRROR_PAD": "AddMirrorPad",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable",
    "REDUCE_ALL": "AddReduceAll",                      # after the 2025 revision (see above)
    "REDUCE_MAX": "AddReduceMax",
    "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile",
    "ZEROS_LIKE": "AddZerosLike",
}
