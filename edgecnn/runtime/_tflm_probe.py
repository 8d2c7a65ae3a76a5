"""The child process that tries tensor-arena sizes for one model in TFLite Micro.

TFLM aborts the whole process on some failures (a too-small arena can end in a segfault after
"Failed to allocate", and a kernel's prepare may fail an assertion), so every try that may fail
runs here, never in the evaluating process. ``edgecnn.runtime.tflm_runner.ArenaProbe`` starts
``python -m edgecnn.runtime._tflm_probe MODEL.tflite`` and speaks one JSON object per line::

    {"arena": 13152}  ->  {"ok": true, "log": "", "recorded": 13152}   # the RecordingMicroAllocator's total
                      ->  {"ok": false, "log": "<TFLM's messages>", "recorded": null}

A child that dies answers nothing; the probe counts that try as failed and starts a new child.
"""
from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> None:
    from edgecnn.runtime.tflm_runner import _try, recorded_arena

    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], "rb") as f:
        data = f.read()
    for line in sys.stdin:
        if not line.strip():
            continue
        interp, log = _try(data, int(json.loads(line)["arena"]))
        recorded = None if interp is None else recorded_arena(interp)
        sys.stdout.write(json.dumps({"ok": interp is not None, "log": log[-4000:], "recorded": recorded}) + "\n")
        sys.stdout.flush()
        del interp


if __name__ == "__main__":
    main()
