"""The quantisation layer: TF-free imports, CPU features, calibration checks, the QAT config registry.

The quantisers themselves (TFLite int8 / percentile, ONNX QDQ and sensitivity) are exercised on a
trained model in tests/test_compress.py and through the exporters in tests/test_export.py.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import EdgecnnError
from edgecnn.quantize import (
    MIN_CALIBRATION,
    CalibrationReader,
    check_calibration,
    parse_cpuinfo,
    representative_dataset,
)

ROOT = Path(__file__).resolve().parents[1]

X86_AVX2 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c avx2 fma bmi2
"""
X86_VNNI = X86_AVX2.replace("bmi2", "bmi2 avx512f avx512bw avx512_vnni")
X86_AVX_VNNI = X86_AVX2.replace("bmi2", "bmi2 avx_vnni")
X86_AMX = X86_AVX2.replace("bmi2", "bmi2 amx_bf16 amx_tile amx_int8")
X86_OLD = X86_AVX2.replace(" avx2", "")
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
"""


@pytest.mark.parametrize("code", [
    "import sys, edgecnn.export as e; e.list_formats(); assert 'tensorflow' not in sys.modules",
    ("import sys, edgecnn.quantize as q; q.check_calibration([[[[0, 0, 0]]]] * q.MIN_CALIBRATION); "
     "q.cpu_features(); assert not {'tensorflow', 'onnxruntime'} & set(sys.modules)"),
    "import sys, edgecnn.export.registry as r; r.get_format('tflite-int8'); assert 'tensorflow' not in sys.modules",
])
def test_quantize_and_format_listing_import_no_tensorflow(code):
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("text, machine, flags, activation, reduce_range", [
    (X86_AVX2, "x86_64", {"avx2"}, "uint8", True),
    (X86_VNNI, "x86_64", {"avx2", "avx512_vnni", "vnni"}, "uint8", False),
    (X86_AVX_VNNI, "x86_64", {"avx2", "avx_vnni", "vnni"}, "uint8", False),
    (X86_AMX, "x86_64", {"avx2", "amx", "vnni"}, "uint8", False),
    (X86_OLD, "x86_64", set(), "uint8", False),
    (ARM, "aarch64", {"arm", "arm_dotprod"}, "int8", False),
    (ARM, "", {"arm", "arm_dotprod"}, "int8", False),          # the text alone says ARM
    ("", "arm64", {"arm"}, "int8", False),                     # macOS: no cpuinfo, the machine says ARM
    ("", "", set(), "uint8", False),                           # unreadable: onnxruntime's defaults
])
def test_cpu_features_from_cpuinfo_text(text, machine, flags, activation, reduce_range):
    got = parse_cpuinfo(text, machine)
    assert got.flags == flags
    assert got.onnx_activation_type == activation
    assert got.onnx_weight_type == "int8"
    assert got.reduce_range is reduce_range


def test_cpu_features_does_not_read_avx2_inside_other_words():
    # "avx2" must be a whole flag: a model name mentioning it is not a flag line
    text = "model name\t: avx2 avx512_vnni marketing\nflags\t\t: sse2 avx\n"
    assert parse_cpuinfo(text, "x86_64").flags == frozenset()


def test_check_calibration_one_minimum_and_clear_errors():
    ok = np.zeros((MIN_CALIBRATION, 8, 8, 3), np.uint8)
    got = check_calibration(ok)
    assert got.dtype == np.float32 and got.shape == ok.shape
    with pytest.raises(EdgecnnError, match=f"TFLite int8 needs at least {MIN_CALIBRATION} calibration images; "
                                           "received 3"):
        check_calibration(ok[:3], what="TFLite int8")
    with pytest.raises(EdgecnnError, match="received 0"):
        check_calibration(None)
    with pytest.raises(EdgecnnError, match=r"\(N, H, W, 3\).*\(10, 8, 8\)"):
        check_calibration(ok[..., 0])
    assert len(check_calibration(ok[:1], minimum=1)) == 1


def test_the_export_registry_and_the_recipe_use_the_same_minimum(tmp_path):
    from edgecnn.export import ExportContext, export

    few = np.zeros((MIN_CALIBRATION - 1, 8, 8, 3), np.float32)
    with pytest.raises(EdgecnnError, match=f"needs at least {MIN_CALIBRATION} calibration images; "
                                           f"received {MIN_CALIBRATION - 1}"):
        export("onnx-int8", None, ExportContext(tmp_path, calibration=few))


def test_feeders_yield_batch_one_float32():
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    samples = list(representative_dataset(images)())
    assert [s[0].shape for s in samples] == [(1, 4, 4, 3)] * 2 and samples[0][0].dtype == np.float32
    reader = CalibrationReader(images, "image")
    first = [reader.get_next()["image"] for _ in range(2)]
    assert reader.get_next() is None
    assert np.array_equal(first[1][0], images[1]) and first[0].dtype == np.float32
    assert len(list(reader)) == 2  # iterating rewinds


def test_qat_configs_register_with_the_quantize_layer():
    from edgecnn.compress._quantize_configs import NoOpQuantizeConfig, OutputQuantizeConfig
    from edgecnn.quantize import converters

    assert converters._QUANTIZE_CONFIGS["OutputQuantizeConfig"] is OutputQuantizeConfig
    assert converters._QUANTIZE_CONFIGS["NoOpQuantizeConfig"] is NoOpQuantizeConfig


def test_quantize_scope_resolves_registered_configs():
    from edgecnn._tf import keras
    from edgecnn.compress._quantize_configs import OutputQuantizeConfig
    from edgecnn.quantize import quantize_scope

    with quantize_scope():
        assert keras.utils.get_registered_object("OutputQuantizeConfig") is OutputQuantizeConfig
    assert keras.utils.get_registered_object("OutputQuantizeConfig") is None
