"""The stage core's export loop: a withheld int8 format is remembered with its settings, its children follow it,
and neither is chosen again until something changes."""
from __future__ import annotations

from dataclasses import dataclass

from edgecnn.stages.export import Withheld, export_formats, withheld_files
from edgecnn.store import RunStore


@dataclass(frozen=True)
class _Spec:
    name: str
    filename: str
    parent: str
    precision: str = "int8"
    runtime: str = "litert"
    needs_calibration: bool = True


INT8 = _Spec("tflite-int8", "model.int8.tflite", "model.keras")
CHILD = _Spec("tflm-c", "model.int8.tflm", "model.int8.tflite", runtime="tflm")
FLOAT_ONNX = _Spec("onnx", "model.onnx", "model.keras", precision="fp32", runtime="onnxruntime",
                   needs_calibration=False)
ONNX_INT8 = _Spec("onnx-int8", "model.int8.onnx", "model.onnx", runtime="onnxruntime")


def _export(store, picks: list, fp: str = "a"):
    def pick_of(spec, model, ctx):
        picks.append(spec.name)
        return Withheld("no route held")

    return export_formats(store, [FLOAT_ONNX, INT8, CHILD, ONNX_INT8], lambda spec: fp, load_model=lambda: None,
                          context=lambda todo, model: None, pick_of=pick_of)


def test_a_withheld_format_and_its_child_are_not_chosen_again_until_the_settings_change(tmp_path):
    store = RunStore(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"float onnx")   # a float file made earlier and current
    store.record_item("export", "onnx", "a", "model.onnx")
    picks: list = []
    assert _export(store, picks) == [] and picks == ["tflite-int8", "onnx-int8"]   # tflm-c follows its parent
    assert set(store.withheld_items("export")) == {"tflite-int8", "tflm-c", "onnx-int8"}
    assert store.withheld_items("export")["tflm-c"].startswith("made from model.int8.tflite")
    # current: the chooser is not run again, also for an int8 file whose parent (model.onnx) ships
    assert _export(store, picks) == [] and picks == ["tflite-int8", "onnx-int8"]
    assert not (tmp_path / "model.int8.tflite").exists() and not (tmp_path / "model.int8.tflm").exists()
    store.record_item("export", "onnx", "b", "model.onnx")
    _export(store, picks, fp="b")                                       # new settings: chosen again
    assert picks == ["tflite-int8", "onnx-int8", "tflite-int8", "onnx-int8"]
    assert set(withheld_files(store, ["tflite-int8"])) == {"model.int8.tflite"}   # a format the recipe names
    assert withheld_files(store, [])  == {}                                        # one it no longer names
