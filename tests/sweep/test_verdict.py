"""The verdict read back from MLflow runs: selection apart from judgement, pairing by seed id, missing
seeds reported, the untrained model as a row. Runs are written by hand to a real MLflow store: no Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lossweep.sweep.evaluate import PER_QUERY_ARTIFACT
from lossweep.sweep.stats import bootstrap_interval, paired_table
from lossweep.sweep.tracking import Tracker
from lossweep.sweep.verdict import build_leaderboard

SELECT, JUDGE = "eval/val/ndcg_at_10", "eval/test/ndcg_at_10"
QUERIES = [f"q{i}" for i in range(40)]


class FakeSweep:
    """A compare sweep's runs as lossweep writes them, with chosen numbers."""

    def __init__(self, tmp_path) -> None:
        self.tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
        tags = {
            "lossweep.role": "sweep",
            "lossweep.mode": "compare",
            "lossweep.metric": SELECT,
            "lossweep.select_on": "val",
            "lossweep.verdict_metrics": json.dumps([JUDGE]),
        }
        params = {"sweep.trials": "2", "sweep.seeds": "3", "training.steps": "10"}
        self.parent = self.tracker.start_run("verdict", "sweep", params, tags)
        self.rng = np.random.default_rng(0)
        self.difficulty = self.rng.uniform(0.2, 0.8, len(QUERIES))

    def run(self, phase: str, loss: str, state: str = "completed", metrics=None, items=None, **tags) -> str:
        params = {"training.batch_size": "16", "resources.workers": "2", "resources.gpus_per_worker": "0"}
        run_tags = {"lossweep.phase": phase, "lossweep.loss": loss, "lossweep.trial_state": state}
        run_tags |= {"lossweep.last_step": "10" if state == "completed" else "4"} | tags
        run_id = self.tracker.start_run("verdict", loss, params, run_tags, parent_run_id=self.parent)
        if metrics:
            self.tracker.log_metrics(run_id, metrics, step=10)
        if items is not None:
            self.tracker.log_dict(run_id, {JUDGE: dict(zip(QUERIES, items.tolist(), strict=True))}, PER_QUERY_ARTIFACT)
        self.tracker.end_run(run_id, "FINISHED" if state != "failed" else "FAILED")
        return run_id

    def tuning(self, loss: str, scores: list[float]) -> None:
        for score in scores:
            self.run("tune", loss, metrics={SELECT: score}, **{"lossweep.trial_config": json.dumps({"loss": loss})})

    def seed(self, loss: str, seed: int, lift: float, failed: bool = False) -> np.ndarray | None:
        if failed:
            self.run("seeds", loss, state="failed", **{"lossweep.seed": str(seed)})
            return None
        items = np.clip(self.difficulty + lift + self.rng.normal(0, 0.05, len(QUERIES)), 0, 1)
        self.run("seeds", loss, metrics={JUDGE: float(items.mean())}, items=items, **{"lossweep.seed": str(seed)})
        return items

    def baseline(self) -> np.ndarray:
        items = self.difficulty.copy()
        self.run("baseline", "baseline (untrained)", metrics={JUDGE: float(items.mean()), SELECT: 0.5}, items=items)
        return items


def test_selection_decides_pairing_is_by_seed_and_a_failed_seed_is_reported(tmp_path):
    sweep = FakeSweep(tmp_path)
    sweep.tuning("Alpha", [0.50, 0.55])
    sweep.tuning("Beta", [0.52, 0.60])  # Beta wins the selection set ...
    base = sweep.baseline()
    alpha = {seed: sweep.seed("Alpha", seed, lift=0.10) for seed in (1044, 1042, 1043)}  # written out of order
    beta = {1042: sweep.seed("Beta", 1042, lift=0.0), 1043: sweep.seed("Beta", 1043, 0.0, failed=True)}
    beta[1044] = sweep.seed("Beta", 1044, lift=0.0)

    board = build_leaderboard(sweep.tracker, sweep.parent)

    rows = {row.loss: row for row in board.rows}
    # ... so Beta is selected although Alpha judges better: the verdict set never chooses
    assert rows["Beta"].selected and not rows["Alpha"].selected and board.best.loss == "Beta"
    assert [row.loss for row in board.rows] == ["Alpha", "Beta"]  # ranked by the verdict score
    assert sorted(rows["Beta"].seeds) == [1042, 1044] and rows["Beta"].missing_seeds == [1043]
    # Alpha vs Beta on the seeds both finished, paired by seed id and query
    expected = np.mean([alpha[s] - beta[s] for s in (1042, 1044)])
    assert rows["Alpha"].vs_selected.value == pytest.approx(expected)
    assert rows["Alpha"].vs_selected.shows_difference() and rows["Alpha"].vs_selected.value > 0
    # the untrained model is a row, and every loss's lift over it has an interval
    assert board.baseline.score.value == pytest.approx(base.mean())
    alpha_table, _ = paired_table(
        {s: dict(zip(QUERIES, v, strict=True)) for s, v in alpha.items()}, dict(zip(QUERIES, base, strict=True))
    )
    raw = bootstrap_interval(alpha_table)
    assert rows["Alpha"].vs_baseline.value == pytest.approx(raw.value)
    assert rows["Alpha"].vs_baseline.p >= raw.p  # Holm-adjusted across the two losses
    assert not rows["Beta"].vs_baseline.shows_difference()
    assert "Beat the untrained model" in board.verdict and "Alpha" in board.verdict.split("Beat")[1]
    assert "Better than Beta on the verdict set (it was not selected on it): Alpha" in board.verdict
    assert "Beta (2 of 2 tuning trials ran, 2 of 3 seed runs finished; missing seeds 1043)" in board.verdict
    # what each loss used: 2 tuning trials of 10 steps at batch 16, on 2 workers
    assert (rows["Alpha"].tuning.trials, rows["Alpha"].tuning.steps, rows["Alpha"].tuning.samples) == (2, 20, 320)
    assert rows["Beta"].verdict.failed == 1 and rows["Beta"].verdict.completed == 2
    assert rows["Alpha"].tuning.device_s == pytest.approx(2 * rows["Alpha"].tuning.wall_s)
    columns, records = board.table()
    assert len(records) == 3 and records[-1][1] == "untrained model"
    assert all(len(record) == len(columns) for record in records)


def test_a_loss_without_any_finished_seed_run_never_breaks_the_leaderboard(tmp_path):
    sweep = FakeSweep(tmp_path)
    sweep.tuning("Alpha", [0.50, 0.55])
    sweep.tuning("Beta", [0.60])  # one tuning trial failed before it could report
    sweep.run("tune", "Beta", state="failed")
    sweep.baseline()
    for seed in (1042, 1043, 1044):
        sweep.seed("Alpha", seed, lift=-0.05)
        sweep.seed("Beta", seed, 0.0, failed=True)

    board = build_leaderboard(sweep.tracker, sweep.parent)

    rows = {row.loss: row for row in board.rows}
    assert rows["Beta"].selected and rows["Beta"].score is None and rows["Alpha"].vs_selected is None
    assert "Beta has no finished seed run on the verdict set: no verdict" in board.verdict
    assert "NO loss beats the untrained model" in board.verdict
    assert "Worse than the untrained model" in board.verdict and "Alpha" in board.verdict.split("Worse than the")[1]
    assert "Beta (1 of 2 tuning trials ran, 0 of 3 seed runs finished; missing seeds 1042, 1043, 1044)" in board.verdict
    assert board.to_markdown().count("\n|") == 5  # header, rule, two losses and the untrained model
