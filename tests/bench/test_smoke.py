"""Every benchmark runs at a tiny size, so none can rot. Numbers are not checked: only that each
script finishes, writes its JSON and that the JSON holds the ratio it exists to measure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

RATIOS = {
    "adaptive_seeds": "seed_run_ratio",
    "ray_overhead": "throughput_ratio",
    "trial_overhead": "warm_fixed_ratio_after_over_before",
    "gather_exact": "gather_cost_ratio",
    "eval_dims": "speedup_vs_reference",
    "memory": "cached_peak_ratio_high_over_low",
    "search_efficiency": "fraction_of_grid",
    "train_vs_st": "wall_ratio",
    "data_passes": "speedup_vs_rescan",
    "lora_vs_full": "checkpoint_ratio",
    "eval_memory": "peak_ratio_at_largest",
    "sampled_eval": "spearman_rho_min",
    "encode_cluster": "actor_speedup",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RATIOS))
def test_benchmark_runs_at_a_tiny_size(name, tmp_path, data_dir):
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, LOSSWEEP_DATA_DIR=str(data_dir))
    result = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--smoke", "--repeats", "1", "--out", str(out)],
        cwd=BENCH,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    written = json.loads(out.read_text())
    assert written["smoke"] is True and written["benchmark"] == name
    assert written[RATIOS[name]] is not None
    assert "met" in written and written["machine"]["cores"]
