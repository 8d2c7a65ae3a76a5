"""Microcontroller targets: what fits a named MCU profile, found before training, and its latency, estimated.

* :mod:`edgecnn.mcu.latency`: MACs per op of the int8 graph x published per-op costs -> an estimated latency.
* :mod:`edgecnn.mcu.search`: candidate backbones x input sizes x widths; those whose arena or flash does not fit
  the profile are dropped before training, the rest trained briefly; the accuracy / arena / flash / latency front.
"""
from edgecnn.mcu.latency import CORE_COSTS, PROFILE_CORES, estimate_latency, op_costs

__all__ = ["CORE_COSTS", "PROFILE_CORES", "estimate_latency", "op_costs"]
