"""The MCU search at tiny size: what does not fit is dropped before training, the rest trained and ranked."""
from __future__ import annotations

import json

import pytest

from edgecnn.mcu.search import McuCandidate, NoCandidateFits, search_mcu

SMALL = McuCandidate("dsconv", 32, {"alpha": 0.25, "depth": 2})
# 160 px MobileNetV2: its block2 expansion writes 80x80x96 int8 (600 KiB), far over cortex-m4-256k's 192 KiB
BIG = McuCandidate("mobilenet_v2_mcu", 160, {"blocks": 3})


def test_search_trains_only_what_fits(tiny_defects, tmp_path):
    res = search_mcu(tiny_defects, "cortex-m4-256k", out_dir=tmp_path, candidates=(SMALL, BIG), epochs=1,
                     head_epochs=0, batch_size=16)
    small, big = res.rows
    assert small.fits and small.trained and small.val_top1 is not None and small.train_seconds is not None
    assert not big.fits and big.over == ["arena"] and not big.trained and big.val_top1 is None
    assert big.arena_bytes / 1024 > 192 >= small.arena_bytes / 1024
    assert res.pick is small
    assert small.latency["kind"] == "estimate" and small.latency["ms"] > 0
    saved = json.loads((tmp_path / "mcu_search.json").read_text())
    assert saved["pick"] == small.label and saved["limits_kb"] == {"max_arena_kb": 192.0, "max_flash_kb": 768.0}
    assert "<- pick" in res.table() and "over arena" in res.table()


def test_no_candidate_fits_names_the_constraint(tiny_defects, tmp_path):
    with pytest.raises(NoCandidateFits) as e:
        search_mcu(tiny_defects, "cortex-m4-256k", out_dir=tmp_path, candidates=(BIG,), epochs=1)
    msg = str(e.value)
    assert msg.startswith("no candidate fits cortex-m4-256k") and "arena: the smallest is" in msg
    assert "max_arena_kb 192" in msg and "flash:" not in msg          # flash fits: only the arena is named
    assert json.loads((tmp_path / "mcu_search.json").read_text())["pick"] is None


def test_unknown_profile_is_one_readable_error(tiny_defects, tmp_path):
    from edgecnn.errors import EdgecnnError

    with pytest.raises(EdgecnnError, match="Did you mean 'cortex-m4-256k'"):
        search_mcu(tiny_defects, "cortex-m4-256", out_dir=tmp_path, candidates=(SMALL,))


def test_m4_recipe_fits_its_profile_before_training():
    """models/mcu-m4-256k.yaml's net, untrained, already fits cortex-m4-256k (the arena does not depend on weights)."""
    from pathlib import Path

    from edgecnn.config import load_recipe
    from edgecnn.mcu.search import fit_figures, profile_limits

    root = Path(__file__).resolve().parent.parent
    for name, profile in (("mcu-m4-256k", "cortex-m4-256k"), ("mcu-m7-1m", "cortex-m7-1m")):
        r = load_recipe(root / "models" / f"{name}.yaml")
        assert [t.profile for t in r.budgets if t.profile] == [profile]
    r = load_recipe(root / "models" / "mcu-m4-256k.yaml")
    c = McuCandidate(r.model.name, r.model.input_size, {k: v for k, v in r.model.args.items() if k != "weights"})
    f = fit_figures(c, 4, "cortex-m4-256k")
    limits = profile_limits("cortex-m4-256k")
    assert f["arena_bytes"] / 1024 <= limits["max_arena_kb"] and f["flash_bytes"] / 1024 <= limits["max_flash_kb"]
