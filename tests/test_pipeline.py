"""The pipeline end to end on a tiny recipe: run, skip, resume, budgets and the CLI's exit codes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecnn._io import sha256_file

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "recipes" / "tiny.yaml"
pytestmark = pytest.mark.slow


def edgecnn(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "edgecnn.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_run_directory_complete(tiny_run):
    names = {"recipe.yaml", "model.keras", "labels.txt", "manifest.json", "report.json", "report.md",
             "history.json", "model.fp32.tflite", "model.fp16.tflite", "model.dynamic.tflite",
             "model.int8.tflite", "model.onnx", "model.int8.onnx"}
    assert names <= {p.name for p in tiny_run.iterdir()}
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert set(manifest["artifacts"]) == {n for n in names if n.endswith((".tflite", ".onnx"))}
    for name, entry in manifest["artifacts"].items():
        assert sha256_file(tiny_run / name) == entry["sha256"]
        assert entry["bytes"] == (tiny_run / name).stat().st_size
        assert entry["input"]["shape"][1:] == [32, 32, 3]
    assert manifest["labels"] == ["crack", "good", "scratch", "spot"]
    assert manifest["artifacts"]["model.int8.tflite"]["input"]["dtype"] == "int8"
    report = json.loads((tiny_run / "report.json").read_text())
    for a in report["artifacts"].values():
        assert a["latency"]["1"]["runs"] == 10 and "p99_ms" in a["latency"]["1"]
        assert len(a["metrics"]["confusion_matrix"]) == 4
    assert report["verdict"] == "pass"
    assert not list(tiny_run.glob(".*.tmp*")) and not list(tiny_run.glob(".model*"))  # no temp files left


def test_run_logs_its_stage_table(tiny_run):
    """Every stage's wall time and the process's memory after it (edgecnn.log), in the task's stage order."""
    import re

    log = (tiny_run / "edgecnn.log").read_text()
    rows = re.findall(r"stage (\w+)\s+([\d.]+) s\s+RSS\s+(\d+) MB after, peak\s+(\d+) MB", log)
    assert [r[0] for r in rows] == ["train", "compress", "export", "evaluate"]
    assert all(float(r[1]) >= 0 and 0 < int(r[2]) <= int(r[3]) for r in rows)
    assert re.search(r"run: [\d.]+ s, peak RSS \d+ MB", log)


def test_rerun_skips_every_stage(tiny_run):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_run.iterdir() if p.is_file()}
    p = edgecnn("run", str(tiny_run / "recipe.yaml"), "--output", str(tiny_run))
    assert p.returncode == 0, p.stderr
    assert "train: up to date" in p.stderr and "export: all 6 artifacts up to date" in p.stderr
    assert "evaluate: up to date" in p.stderr
    after = {p.name: p.stat().st_mtime_ns for p in tiny_run.iterdir() if p.is_file()}
    for name in ("model.keras", "model.int8.tflite", "model.onnx"):
        assert before[name] == after[name]


def test_stage_commands_and_failing_budget(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    recipe = (run / "recipe.yaml").read_text()
    (run / "recipe.yaml").write_text(recipe.replace("max_size_kb: 5000.0", "max_size_kb: 1.0"))
    p = edgecnn("evaluate", str(run))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "max_size_kb broken" in p.stderr and "model.int8.tflite" in p.stderr
    p = edgecnn("export", str(run), "--format", "tflite-int8", "--force")
    assert p.returncode == 0, p.stderr
    assert "exported: tflite-int8" in p.stdout


def test_cli_errors_are_one_line(tmp_path):
    p = edgecnn("run", str(TINY), "--data", str(tmp_path / "missing"), "--output", str(tmp_path / "o"))
    assert p.returncode == 2
    assert "error: dataset folder not found" in p.stderr and "Traceback" not in p.stderr
    p = edgecnn("run", str(tmp_path / "nope.yaml"))
    assert p.returncode == 2 and "recipe not found" in p.stderr
    p = edgecnn("train", str(tmp_path))
    assert p.returncode == 2 and "not a run directory" in p.stderr


def test_unknown_model_in_recipe(tmp_path, tiny_defects):
    r = tmp_path / "r.yaml"
    r.write_text(TINY.read_text().replace("name: dsconv", "name: dsconvv"))
    p = edgecnn("run", str(r), "--data", str(tiny_defects), "--output", str(tmp_path / "o"))
    assert p.returncode == 2 and "unknown model 'dsconvv'" in p.stderr and "Did you mean 'dsconv'" in p.stderr


@pytest.mark.xdist_group("pipeline-resume")   # needs no module fixture: its own work unit
def test_interrupted_training_resumes(tmp_path, tiny_defects):
    recipe = tmp_path / "long.yaml"
    # 8 epochs: killed after 3, the resumed run trains the other 5 and finishes the pipeline
    recipe.write_text(TINY.read_text().replace("head: {epochs: 2, lr: 0.003}", "head: {epochs: 8, lr: 0.003}"))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgecnn.cli", "run", str(recipe), "--data", str(tiny_defects), "--output", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 300
    for line in proc.stdout:  # kill once two epochs have been checkpointed
        lines.append(line)
        if "phase1 epoch 3/8" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoints" / "phase1-backup").exists(), "".join(lines)
    assert not (out / "model.keras").exists()
    p = edgecnn("run", str(recipe), "--data", str(tiny_defects), "--output", str(out))
    assert p.returncode in (0, 1), p.stderr
    assert "resuming from the last completed epoch" in p.stderr
    first = next(line for line in p.stderr.splitlines() if "phase1 epoch" in line)
    assert "phase1 epoch 1/8" not in first, first  # it did not start over
    assert (out / "model.keras").exists() and (out / "report.json").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_evaluate_through_the_service(tiny_run):
    """`edgecnn evaluate RUN --url`: same accuracy as in-process for the same artifact; budgets applied."""
    import urllib.request

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "edgecnn.serve", str(tiny_run), "--port", str(port),
                               "--threads", "1", "--log-level", "warning"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        p = edgecnn("evaluate", str(tiny_run), "--url", f"http://127.0.0.1:{port}", "--concurrency", "1",
                    "--concurrency", "2", "--version", "model.onnx")
        assert p.returncode == 0, p.stdout + p.stderr
        http = json.loads((tiny_run / "report.http.json").read_text())
        in_process = json.loads((tiny_run / "report.json").read_text())["artifacts"]["model.onnx"]["metrics"]
        assert http["version"] == "model.onnx" and [lv["concurrency"] for lv in http["levels"]] == [1, 2]
        assert http["accuracy"] == pytest.approx(in_process["accuracy"])
        assert all(lv["errors"] == 0 and lv["p95_ms"] > 0 for lv in http["levels"])
    finally:
        server.terminate()
        server.wait(timeout=60)


# Two families besides the tiny recipe's dsconv: the pipeline is model-agnostic, and every model's
# export round trip is tests/test_zoo.py's job (MobileNetV2 and MobileNetV3 also go through QAT and
# pruning in tests/test_compress.py), so the two slowest end-to-end runs of the zoo were dropped from here.
@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.xdist_group(f"pipeline-{m}"))
                                   for m in ("ds_cnn", "lenet5")])
def test_run_with_zoo_models(model, tmp_path, tiny_defects):
    """`edgecnn run` trains and exports any registered model on the bundled data (issue: the model zoo)."""
    import yaml

    recipe = yaml.safe_load(TINY.read_text())
    recipe["name"] = f"zoo-{model}"
    recipe["model"] = {"name": model, "input_size": 32, "args": {"weights": None}}
    recipe["train"]["head"]["epochs"] = 1
    recipe["export"] = {"formats": ["tflite-fp32", "tflite-int8", "onnx"], "calibration_images": 20}
    recipe["budgets"] = []  # the tiny recipe's size budget is for dsconv
    recipe["evaluate"]["runtimes"] = []  # each file in its own runtime: this test is about the models
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    p = edgecnn("run", str(path), "--data", str(tiny_defects), "--output", str(tmp_path / "run"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(report["artifacts"]) == {"model.keras", "model.fp32.tflite", "model.int8.tflite", "model.onnx"}
    for name in ("model.fp32.tflite", "model.onnx"):
        assert report["artifacts"][name]["metrics"]["agreement"] == 1.0, name
