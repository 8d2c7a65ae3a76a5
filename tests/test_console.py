"""The console (edgecnn/console.py): a command shows edgecnn's own lines on the terminal; TensorFlow's C++ logging,
the converters' and onnxruntime's prints, third-party loggers and warnings go to the run's edgecnn.log."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "recipes" / "tiny.yaml"

LOG_LINE = re.compile(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) edgecnn(\.\w+)*: ")   # the terminal's
FILE_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO edgecnn(\.\w+)*: ")          # the log file's
# What `edgecnn run` prints besides its log lines (cli._print_result): its results on stdout, notes on stderr.
RESULT_LINE = re.compile(r"  overridden: |report: |artifacts: |  model\S* +(top-1|skipped)")
NOTE_LINE = re.compile(r"unverified model\S+: plain int8 PTQ")


def _clean_env() -> dict[str, str]:
    """The environment of a user's shell: no TF_CPP_MIN_LOG_LEVEL (the Makefile exports it), a wide terminal."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def _foreign(text: str, allowed: list[re.Pattern]) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not any(p.match(line) for p in allowed)]


@pytest.mark.slow   # trains a model (~15 s on 2 cores); the tests below hold the mechanism in the fast suite
def test_run_shows_only_edgecnn_lines_and_logs_the_rest(tiny_defects, tmp_path):
    out = tmp_path / "run"
    # a TFLite int8 export (the converter's C++ "fully_quantize" line), an ONNX int8 calibrated by histogram
    # (onnxruntime's Python prints) and an evaluation in LiteRT (its XNNPACK line), besides TensorFlow's start-up
    sets = ["export.formats=[tflite-int8, onnx, onnx-int8]", "export.onnx_calibration=percentile",
            "train.head.epochs=1"]
    p = subprocess.run([sys.executable, "-m", "edgecnn.cli", "run", str(TINY), "--data", str(tiny_defects),
                        "--output", str(out), *(a for s in sets for a in ("--set", s))],
                       capture_output=True, text=True, timeout=600, env=_clean_env(), cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    assert not _foreign(p.stdout, [RESULT_LINE]), _foreign(p.stdout, [RESULT_LINE])
    assert not _foreign(p.stderr, [LOG_LINE, NOTE_LINE]), _foreign(p.stderr, [LOG_LINE, NOTE_LINE])
    assert "exported tflite-int8" in p.stderr and "report: " in p.stdout   # the terminal still has edgecnn's lines

    log = (out / "edgecnn.log").read_text()
    native = ("fully_quantize", "Created TensorFlow Lite XNNPACK delegate", "I0000", "E0000", "W0000")
    assert any(line.startswith(native) for line in log.splitlines()), log[-3000:]     # C++ through fds 1 and 2
    assert "Collecting tensor data and making histogram" in log, log[-3000:]           # a third-party Python print
    assert any(FILE_LINE.match(line) and "exported tflite-int8" in line for line in log.splitlines())
    assert log.startswith("--- ") and " edgecnn run " in log.splitlines()[0]


BOOM = """
import logging, os, sys, warnings
from pathlib import Path
from edgecnn import cli, console

@cli.app.command("boom")
def boom(run_dir: Path):
    cli._setup_logging()
    console.capture()
    os.write(2, b"I0000 native line before the run directory\\n")
    console.capture(run_dir)
    os.write(1, b"native stdout line\\n")
    print("third-party print")
    warnings.warn("a third-party warning")
    logging.getLogger("tensorflow").warning("a third-party logger")
    logging.getLogger("edgecnn").info("edgecnn's own line")
    if os.environ.get("BOOM"):
        raise RuntimeError("boom")

@cli.app.command("other")
def other():
    pass

sys.argv = ["edgecnn", "boom", sys.argv[1]]
cli.main()
"""


def _boom(run_dir: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(BOOM), str(run_dir)], capture_output=True,
                          text=True, timeout=120, env={**_clean_env(), **env}, cwd=ROOT)


def test_other_output_goes_to_the_log_in_order(tmp_path):
    (tmp_path / "tmp").mkdir()
    p = _boom(tmp_path / "run", TMPDIR=str(tmp_path / "tmp"))
    assert p.returncode == 0, p.stderr
    assert p.stdout == "" and _foreign(p.stderr, [LOG_LINE]) == [], p.stderr
    assert "edgecnn's own line" in p.stderr
    log = (tmp_path / "run" / "edgecnn.log").read_text()
    wanted = ["I0000 native line before the run directory", "native stdout line", "third-party print",
              "a third-party warning", "a third-party logger", "INFO edgecnn: edgecnn's own line"]
    at = [log.find(w) for w in wanted]
    assert -1 not in at and at == sorted(at), log
    assert not list((tmp_path / "tmp").iterdir())   # the buffer moved into the run directory


def test_an_unexpected_error_is_one_line_and_its_traceback_is_in_the_log(tmp_path):
    p = _boom(tmp_path / "run", BOOM="1")
    assert p.returncode == 1
    assert "Traceback" not in p.stderr and p.stdout == ""
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: RuntimeError: boom (unexpected: the traceback is in {tmp_path / 'run' / 'edgecnn.log'})"]
    log = (tmp_path / "run" / "edgecnn.log").read_text()
    assert "Traceback" in log and "RuntimeError: boom" in log


def test_in_process_calls_keep_their_streams(tmp_path, capfd):
    from edgecnn import console

    assert console.capture(tmp_path / "run") is None   # no Session (cli.main): nothing redirected, nothing made
    os.write(1, b"still on the test's stdout\n")
    assert not (tmp_path / "run").exists()
    assert "still on the test's stdout" in capfd.readouterr().out
