"""LiteRT's aarch64 build (ai-edge-litert 1.4.0, XNNPACK's NEON kernels) in an arm64 root under qemu-user.

Opt-in (``evaluate.runtimes: [litert-arm64]``): each int8 ``.tflite`` of a run is run on the test split
with the kernels a phone or an arm64 board runs, and its report entry says how often its top-1 answers
agree with ``litert`` on this machine (``target.host_agreement``, judged by ``min_target_agreement``).
It gives accuracy and agreement only, never a latency (emulated: :mod:`edgecnn.runtime.arm64_child`).

    runner = load_runner("export/run/model.int8.tflite", runtime="litert-arm64")   # builds the root once
    runner(images)                       # float32 RGB 0-255 NHWC in, probabilities out (batch 1, looped)
"""
from __future__ import annotations

from edgecnn.runtime.arm64_child import Arm64Runner, register_arm64


@register_arm64("litert-arm64", suffix=".tflite", package="ai-edge-litert",
                description="LiteRT interpreter, aarch64 build (XNNPACK NEON kernels)")
class LiteRTArm64Runner(Arm64Runner):
    """LiteRT's aarch64 interpreter at batch 1 in a long-lived emulated child process."""

    engine = "litert"
    host_runtime = "litert"
