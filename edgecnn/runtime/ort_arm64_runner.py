"""onnxruntime's aarch64 build (its ARM int8 kernels: S8S8 dot products) in an arm64 root under qemu-user.

Opt-in (``evaluate.runtimes: [onnxruntime-arm64]``): each int8 ``.onnx`` of a run is run on the test
split with the kernels an arm64 board runs, and its report entry says how often its top-1 answers agree
with ``onnxruntime`` on this machine (``target.host_agreement``, judged by ``min_target_agreement``).
It gives accuracy and agreement only, never a latency (emulated: :mod:`edgecnn.runtime.arm64_child`).

    runner = load_runner("export/run/model.int8.onnx", runtime="onnxruntime-arm64")  # builds the root once
"""
from __future__ import annotations

from edgecnn.runtime.arm64_child import Arm64Runner, register_arm64


@register_arm64("onnxruntime-arm64", suffix=".onnx", package="onnxruntime",
                description="onnxruntime, aarch64 build (ARM int8 kernels)")
class OrtArm64Runner(Arm64Runner):
    """onnxruntime's aarch64 session in a long-lived emulated child process (batches of up to 64)."""

    engine = "onnxruntime"
    host_runtime = "onnxruntime"
