"""train.distribute: multi_worker, two workers as two processes on localhost (CPU).

One scenario, to keep it cheap: a one-process reference fit with the same global batch, learning
rate and seed; then two workers (`edgecnn train RUN` with TF_CONFIG) killed after their second epoch
and started again. The resumed job must continue the epoch count from the chief's backup, the chief
alone must write the run directory, and the epoch losses (killed run's epochs, then the resumed
ones) must follow the reference's within LOSS_TOL: the workers see the same images in the same
global batch size, but each worker shuffles only its half, so batches differ.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 3
LOSS_TOL = 0.10   # relative, per epoch (measured: at most 5%)
pytestmark = pytest.mark.slow


def _recipe(data: Path, **train) -> dict:
    no_aug = {"flip": "none", "rotation": 0, "zoom": 0, "contrast": 0}
    return {"name": "dist", "data": {"path": str(data), "batch_size": 8, "min_images_per_class": 2, "augment": no_aug},
            "model": {"name": "dsconv", "input_size": 32, "args": {"alpha": 0.25, "depth": 4}},
            "train": {"head": {"epochs": EPOCHS, "lr": 0.003}, "finetune": {"blocks": 0},
                      "early_stopping_patience": 50, **train}}


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start(run_dir: Path, ports: list[int], index: int, log: Path) -> subprocess.Popen:
    tf_config = {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    with open(log, "a") as f:
        return subprocess.Popen([sys.executable, "-m", "edgecnn.cli", "train", str(run_dir)], cwd=ROOT, env=env,
                                stdout=f, stderr=subprocess.STDOUT)


def _epoch_losses(text: str) -> dict[int, float]:
    return {int(m[1]): float(m[2]) for m in re.finditer(r"phase1 epoch (\d+)/\d+ .*?\bloss=([0-9.e+-]+)", text)}


def test_two_workers_train_like_one_process_and_resume_after_a_kill(tmp_path):
    from edgecnn.config import Recipe, dump_recipe
    from edgecnn.data.defects import make_defects
    from edgecnn.pipeline import Run
    from edgecnn.train import train

    data = tmp_path / "data"
    make_defects(data, seed=0, per_class=12, size=32)

    # The reference: one process, the workers' global batch (2 x 8) and their linearly scaled lr (2 x 0.003).
    one = Recipe.model_validate(_recipe(data))
    one.data.batch_size, one.train.head.lr = 16, 0.006
    ref = train(one, Run(one, tmp_path / "one").dataset(), tmp_path / "one").history["phases"][0]["loss"]

    run = tmp_path / "two"
    run.mkdir()
    (run / "recipe.yaml").write_text(dump_recipe(Recipe.model_validate(
        _recipe(data, distribute={"strategy": "multi_worker", "lr_scaling": "linear"}))))
    logs = [tmp_path / "chief.log", tmp_path / "worker1.log"]
    ports = _ports(2)
    procs = [_start(run, ports, i, logs[i]) for i in range(2)]
    deadline = time.time() + 240
    while 2 not in _epoch_losses(logs[0].read_text()) and time.time() < deadline and procs[0].poll() is None:
        time.sleep(0.5)
    procs[1].send_signal(signal.SIGKILL)   # a worker dies after the second epoch's backup ...
    procs[0].send_signal(signal.SIGKILL)   # ... and the job restarts both (TFJob restarts the failed pods)
    for p in procs:
        p.wait()
    killed = logs[0].read_text()
    before = _epoch_losses(killed)
    assert 2 in before, killed[-3000:]
    assert (run / "checkpoints" / "phase1-backup").is_dir() and not (run / "model.keras").exists()

    logs = [tmp_path / "chief2.log", tmp_path / "worker1b.log"]
    ports = _ports(2)
    procs = [_start(run, ports, i, logs[i]) for i in range(2)]
    for p, log in zip(procs, logs):
        assert p.wait(timeout=300) == 0, log.read_text()[-4000:]
    resumed = logs[0].read_text()
    assert "resuming from the last completed epoch" in resumed
    after = _epoch_losses(resumed)
    assert min(after) > 2 and max(after) == EPOCHS, resumed[-3000:]   # the count continued, nothing redone
    assert _epoch_losses(logs[1].read_text()).keys() == after.keys()   # the other worker stepped with it

    history = json.loads((run / "history.json").read_text())
    assert history["distribute"] == {"strategy": "multi_worker", "workers": 2, "replicas": 2, "batch_per_replica": 8,
                                     "global_batch": 16, "lr_scaling": "linear", "lr_factor": 2}
    assert history["phases"][0]["loss"] == pytest.approx([after[e] for e in sorted(after)], rel=1e-3)
    curve = [before[e] if e in before else after[e] for e in range(1, EPOCHS + 1)]
    assert curve == pytest.approx(ref, rel=LOSS_TOL), (curve, ref)

    # The chief alone wrote the run directory; worker 1's temporary copies are gone.
    files = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}
    assert files == {"recipe.yaml", "labels.txt", "dataset.json", "state.json", "model.keras", "history.json",
                     "checkpoints/fingerprint.txt", "checkpoints/phase1.weights.h5",
                     "checkpoints/phase1.history.json"}, files
    assert json.loads((run / "state.json").read_text())["train"]["outputs"].keys() == {"model.keras", "history.json"}
