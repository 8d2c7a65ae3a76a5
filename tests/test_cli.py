"""The thin CLI: the table commands print what the library computes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def edgecnn(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGECNN_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgecnn.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def test_models_and_inspect(tmp_path):
    p = edgecnn("models", "dsconv", home=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "dsconv" in p.stdout and "MACs" in p.stdout
    p = edgecnn("models", "nothing*", home=tmp_path)
    assert p.returncode == 2 and "no registered model matches" in p.stderr
    p = edgecnn("inspect", "lenet5", "--input-size", "32", home=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "receptive" in p.stdout.lower() or "RF" in p.stdout
    assert "parameters" in p.stdout
    p = edgecnn("inspect", "lenet55", home=tmp_path)
    assert p.returncode == 2 and "Did you mean 'lenet5'" in p.stderr
