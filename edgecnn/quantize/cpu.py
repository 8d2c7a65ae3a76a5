"""What this CPU runs fastest and exactly: the ONNX int8 types and whether weights need 7 bits.

onnxruntime's guidance (docs "Quantize ONNX models", "When and why do I need to try U8U8?"):

=============================  ==========================  ==============================================
CPU                            activations / weights       why
=============================  ==========================  ==============================================
x86 with VNNI (AVX512-VNNI,    uint8 / int8 (U8S8)         VPDPBUSD multiplies u8 x s8 without overflow
AVX-VNNI) or AMX
x86 with AVX2, no VNNI         uint8 / int8, reduce_range  VPMADDUBSW sums two u8 x s8 products into int16
                                                           and can saturate; 7-bit weights avoid it
ARM (NEON / dot product)       int8 / int8 (S8S8)          the sdot kernels are signed
anything else (or unreadable)  uint8 / int8                onnxruntime's default
=============================  ==========================  ==============================================

    features = cpu_features()                       # reads /proc/cpuinfo once
    parse_cpuinfo(text, machine="x86_64")           # the same from any cpuinfo text (tests)
    target_features("arm64")                        # the CPU a recipe quantises for (compress.target_cpu)

A recipe names the CPU its int8 files are for (``compress.target_cpu``, :data:`TARGET_CPUS`): ``host``
(this machine, the default), ``arm64`` (phones, boards: S8S8), ``x86-avx2`` (7-bit weights) or
``x86-vnni`` (U8S8). An int8 ONNX built on a VNNI PC for a phone is then quantised for the phone.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

_VNNI = ("avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")
_ARM_MACHINES = ("aarch64", "arm64", "armv7l", "armv8l")


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU flags that decide int8 kernels, and the ONNX quantisation settings they recommend.

    Attributes:
        flags: the relevant flags found: ``"avx2"``, ``"avx512_vnni"``, ``"avx_vnni"``, ``"amx"``,
            ``"vnni"`` (any of the three), ``"arm"``, ``"arm_dotprod"``.
        onnx_activation_type: ``"uint8"`` or ``"int8"`` (onnxruntime ``QuantType`` QUInt8 / QInt8).
        onnx_weight_type: ``"int8"``.
        reduce_range: quantise weights to 7 bits (AVX2 without VNNI).
    """

    flags: frozenset[str]
    onnx_activation_type: str
    onnx_weight_type: str
    reduce_range: bool


def parse_cpuinfo(text: str, machine: str = "") -> CpuFeatures:
    """:class:`CpuFeatures` from the text of ``/proc/cpuinfo`` (x86 ``flags`` or ARM ``Features`` lines).

    Args:
        text: the cpuinfo text; empty when unknown.
        machine: ``platform.machine()``; decides ARM when the text says nothing (macOS has no cpuinfo).
    """
    words: set[str] = set()
    arm = machine.lower() in _ARM_MACHINES
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "flags":
            words.update(value.split())
        elif key == "features":  # ARM: "fp asimd ... asimddp"
            words.update(value.split())
            arm = True
        elif key == "cpu architecture":
            arm = True
    flags = {f for f in ("avx2", "avx512_vnni", "avx_vnni") if f in words}
    if words & {"amx_int8", "amx_tile"}:
        flags.add("amx")
    if words & set(_VNNI):
        flags.add("vnni")
    if arm:
        flags.add("arm")
        if "asimddp" in words:
            flags.add("arm_dotprod")
    if arm:
        return CpuFeatures(frozenset(flags), "int8", "int8", reduce_range=False)
    return CpuFeatures(frozenset(flags), "uint8", "int8", reduce_range="avx2" in flags and "vnni" not in flags)


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """The features of the CPU this process runs on (``/proc/cpuinfo``; ``platform.machine()`` where it is missing)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    return parse_cpuinfo(text, platform.machine())


# The CPUs a recipe may quantise for, as the features they stand for (None: read this machine's).
TARGET_CPUS: dict[str, CpuFeatures | None] = {
    "host": None,
    "arm64": CpuFeatures(frozenset({"arm", "arm_dotprod"}), "int8", "int8", reduce_range=False),
    "x86-avx2": CpuFeatures(frozenset({"avx2"}), "uint8", "int8", reduce_range=True),
    "x86-vnni": CpuFeatures(frozenset({"avx2", "avx512_vnni", "vnni"}), "uint8", "int8", reduce_range=False),
}


def target_features(target: str = "host") -> CpuFeatures:
    """The :class:`CpuFeatures` int8 files are quantised for: a named target CPU, or this machine's (``host``).

    Args:
        target: a key of :data:`TARGET_CPUS`.

    Raises:
        EdgecnnError: an unknown target (the allowed names and the closest one); a ValueError.

    Example:
        >>> target_features("arm64").onnx_activation_type, target_features("x86-avx2").reduce_range
        ('int8', True)
    """
    if target not in TARGET_CPUS:
        from edgecnn.errors import EdgecnnError, did_you_mean

        raise EdgecnnError(f"target_cpu must be one of {', '.join(TARGET_CPUS)}; received target_cpu={target!r}."
                         f"{did_you_mean(str(target), TARGET_CPUS)}")
    return TARGET_CPUS[target] or cpu_features()


__all__ = ["TARGET_CPUS", "CpuFeatures", "cpu_features", "parse_cpuinfo", "target_features"]
