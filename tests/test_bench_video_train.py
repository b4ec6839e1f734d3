"""Smoke test of benchmarks/bench_video_train.py (no timing is asserted)."""

import importlib.util
from pathlib import Path

import pytest


def test_bench_video_train_tiny_prints_a_row_per_variant_and_refuses_bad_counts(capsys):
    """The --tiny run times the serial update and parallel=2 and prints one table row each;
    the serial row's ratio is 1 by construction; a slice count below 2 is a usage error."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_video_train.py"
    spec = importlib.util.spec_from_file_location("bench_video_train", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.main(["--tiny"])
    assert [r["parallel"] for r in rows] == [1, 2] and rows[0]["ratio"] == 1.0
    out = capsys.readouterr().out
    assert "| serial |" in out and "| parallel=2 |" in out
    with pytest.raises(SystemExit):
        mod.main(["--tiny", "--parallel", "1"])
