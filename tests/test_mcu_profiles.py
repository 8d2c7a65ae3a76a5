"""Microcontroller profiles: a target's ``profile:`` sets max_arena_kb / max_flash_kb by the stated headroom rule,
in a recipe's ``budgets:`` and in a budgets.yaml alike; explicit budgets win; a wrong name is one readable error;
every profile is documented. (That ``edgecnn check`` fails a profile the model exceeds: tests/test_tflm.py.)
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgecnn.budget_schema import MCU_PROFILES, MCU_RESERVE, BudgetError, parse_budget_targets, targets_to_json
from edgecnn.evaluate.budget_file import parse_budget_text

DOC = Path(__file__).resolve().parent.parent / "docs" / "microcontrollers.md"


def test_profile_sets_arena_and_flash_by_the_headroom_rule():
    [t] = parse_budget_targets([{"name": "board", "artifacts": "model.int8.tflite", "profile": "cortex-m4-256k"}])
    limits = {lim.key: lim.value for lim in t.limits}
    assert limits == {"max_arena_kb": 256 * (1 - MCU_RESERVE), "max_flash_kb": 1024 * (1 - MCU_RESERVE)}
    assert limits == {"max_arena_kb": 192.0, "max_flash_kb": 768.0} and t.profile == "cortex-m4-256k"
    for p in MCU_PROFILES.values():
        assert p.max_arena_kb < p.sram_kb and p.max_flash_kb < p.flash_kb


def test_explicit_budgets_win_and_the_target_round_trips():
    targets = parse_budget_targets([{"name": "m7", "profile": "cortex-m7-1m",
                                     "budgets": {"max_arena_kb": 300, "min_agreement": 0.99}}])
    limits = {lim.key: lim.value for lim in targets[0].limits}
    assert limits == {"max_arena_kb": 300.0, "min_agreement": 0.99, "max_flash_kb": 2048 * (1 - MCU_RESERVE)}
    assert parse_budget_targets(targets_to_json(targets)) == targets


def test_budget_file_reads_profiles_with_lines():
    text = "version: 1\ntargets:\n  - name: esp\n    artifacts: model.int8.tflite\n    profile: esp32-s3\n"
    [t] = parse_budget_text(text).targets
    assert {lim.key: (lim.value, lim.line) for lim in t.limits} == {
        "max_arena_kb": (512 * (1 - MCU_RESERVE), 5), "max_flash_kb": (8192 * (1 - MCU_RESERVE), 5)}


def test_unknown_profile_is_one_readable_error():
    with pytest.raises(BudgetError) as e:
        parse_budget_targets([{"name": "m4", "profile": "cortex-m4"}])
    msg = str(e.value)
    assert "profile must be one of" in msg and "'cortex-m4'" in msg and "Did you mean 'cortex-m4-256k'" in msg
    with pytest.raises(BudgetError, match=r"budgets.yaml:4: profile must be one of .*received 'm4'"):
        parse_budget_text("version: 1\ntargets:\n  - name: a\n    profile: m4\n")
    with pytest.raises(BudgetError, match="has no 'budgets'"):   # neither a profile nor budgets
        parse_budget_targets([{"name": "nothing"}])


def test_every_profile_is_in_the_docs_table():
    rows = dict(re.findall(r"^\| `([\w-]+)` \| (\d+) KiB SRAM", DOC.read_text(), re.M))
    assert rows == {name: str(p.sram_kb) for name, p in MCU_PROFILES.items()}
