"""The drama benchmarks' own plumbing: the configs they compose and the prepared GPU step
benchmark run on the CPU (so the GPU check does not first fail on a lent machine)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_drama_step  # noqa: E402
import bench_drama_steps_gpu  # noqa: E402


@pytest.mark.parametrize(
    "ablation, window, enabled, expected",
    [("none", "preset", True, 1200), ("none", "full", True, None), ("no_attention", "300", False, 300)],
)
def test_bench_model_values_take_the_preset_the_ablation_and_the_window(ablation, window, enabled, expected):
    values = bench_drama_step.model_values("tiny", ablation, window)["transformer"]
    assert values["d_model"] == 128 and values["attention"]["enabled"] is enabled
    assert values["attention"]["window"] == expected
    no_mamba = bench_drama_step.model_values("base", "no_mamba", "preset")["transformer"]
    assert no_mamba["d_model"] == 768 and no_mamba["mamba_enabled"] is False


def test_the_gpu_step_benchmark_runs_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "steps.json"
    args = ["--device", "cpu", "--preset", "tiny", "--steps", "4", "--frames", "150", "--line-seconds", "1"]
    assert bench_drama_steps_gpu.main([*args, "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["backend"] == "mambapy" and row["batch"] == [2, 75] and row["frames"] == 150
    assert row["step_s"] > 0 and math.isfinite(row["final_loss"]) and row["peak_gib"] is None
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == row
