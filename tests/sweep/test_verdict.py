"""The verdict read back from MLflow runs: selection apart from judgement, pairing by seed id, missing
seeds reported, the untrained model as a row. Runs are written by hand to a real MLflow store: no Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lossweep.sweep.evaluate import PER_QUERY_ARTIFACT
from lossweep.sweep.plots import figure_data, pareto, sweep_figures
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


GUARD = "eval/sts/spearman_cosine"  # a guard set without per-query values: a paired t-test over seeds


class GuardedSweep(FakeSweep):
    """A compare with a guard set and verdicts at steps 5 and 10 (budgets: [0.5, 1.0])."""

    def __init__(self, tmp_path) -> None:
        super().__init__(tmp_path)
        self.tracker.set_tags(self.parent, {"lossweep.guard_metrics": json.dumps([GUARD])})
        self.tracker.client.log_param(self.parent, "sweep.budgets", "[0.5, 1.0]")

    def seed_run(self, loss: str, seed: int, lifts: tuple[float, float], guard: float) -> None:
        """Scores at step 5 and at the end (step 10), and the guard set's score at the end."""
        run_tags = {"lossweep.phase": "seeds", "lossweep.loss": loss, "lossweep.trial_state": "completed"}
        run_tags |= {"lossweep.last_step": "10", "lossweep.seed": str(seed)}
        params = {"training.batch_size": "16", "resources.workers": "1", "resources.gpus_per_worker": "0"}
        run_id = self.tracker.start_run("verdict", loss, params, run_tags, parent_run_id=self.parent)
        for step, lift in zip((5, 10), lifts, strict=True):
            items = np.clip(self.difficulty + lift + self.rng.normal(0, 0.05, len(QUERIES)), 0, 1)
            self.tracker.log_metrics(run_id, {JUDGE: float(items.mean())}, step=step)
            name = PER_QUERY_ARTIFACT if step == 10 else f"per_query/step_{step:07d}.json"
            self.tracker.log_dict(run_id, {JUDGE: dict(zip(QUERIES, items.tolist(), strict=True))}, name)
        self.tracker.log_metrics(run_id, {GUARD: guard}, step=10)
        self.tracker.end_run(run_id, "FINISHED")


def test_guard_sets_are_tested_for_regressions_and_budgets_show_whether_the_leader_changes(tmp_path):
    sweep = GuardedSweep(tmp_path)
    sweep.tuning("Alpha", [0.50, 0.55])
    sweep.tuning("Beta", [0.52, 0.60])
    base = sweep.difficulty.copy()
    run_id = sweep.run(
        "baseline", "baseline (untrained)", metrics={JUDGE: float(base.mean()), SELECT: 0.5, GUARD: 0.80}
    )
    sweep.tracker.log_dict(run_id, {JUDGE: dict(zip(QUERIES, base.tolist(), strict=True))}, PER_QUERY_ARTIFACT)
    for seed, alpha_guard, beta_guard in zip((1042, 1043, 1044), (0.70, 0.69, 0.71), (0.79, 0.81, 0.805), strict=True):
        sweep.seed_run("Alpha", seed, lifts=(0.15, 0.02), guard=alpha_guard)  # leads early, fades; breaks the guard
        sweep.seed_run("Beta", seed, lifts=(0.0, 0.12), guard=beta_guard)  # slow to start, best at the end; keeps it

    board = build_leaderboard(sweep.tracker, sweep.parent)

    rows = {row.loss: row for row in board.rows}
    # The guard: Alpha's 0.10 drop is found (Holm over the guard family), Beta's unchanged score is not
    alpha_guard, beta_guard = rows["Alpha"].judged[GUARD].vs_baseline, rows["Beta"].judged[GUARD].vs_baseline
    assert alpha_guard.value == pytest.approx(-0.10, abs=0.01) and alpha_guard.shows_difference()
    assert not beta_guard.shows_difference()
    assert "Guard sts (spearman_cosine; never used for a decision" in board.verdict
    assert "REGRESSED by Alpha" in board.verdict and "Beta (" not in board.verdict.split("REGRESSED by")[1]
    columns, records = board.table("verdict")
    assert "guard sts/spearman_cosine: vs untrained [95% CI]" in columns
    # The budgets: Alpha leads at 5 steps, Beta at 10, and the ranking flips
    assert sorted(board.budgets) == [5, 10]
    assert board.leaders() == {5: "Alpha", 10: "Beta"}
    assert board.kendall == [(5, 10, pytest.approx(-1.0))]
    assert "the leader changes with the budget (Alpha at 5 steps, Beta at 10 steps)" in board.verdict
    assert board.budgets[5]["Alpha"].score.value == pytest.approx(base.mean() + 0.15, abs=0.01)
    # The figures draw the leaderboard's numbers, the untrained model included
    data = figure_data(board)
    for row in board.rows:
        assert data["score_by_loss"][row.loss] == row.score.value
        assert data["learning_curve"][row.loss] == {s: board.budgets[s][row.loss].score.value for s in (5, 10)}
        assert data["cost"][row.loss][1] == row.score.value
    assert data["score_by_loss"]["untrained model"] == board.baseline.score.value
    assert data["score_by_dim"] == {}  # one embedding size measured: that figure is not drawn
    assert set(sweep_figures(board)) >= {"plots/score_by_loss.png", "plots/learning_curves.png", "plots/cost.png"}
    assert "plots/score_by_dim.png" not in sweep_figures(board)


def test_the_pareto_front_keeps_what_nothing_beats_on_both_cost_and_score():
    points = {"cheap": (10.0, 0.40), "dear": (100.0, 0.50), "worse and dearer": (120.0, 0.45), "mid": (50.0, 0.42)}
    assert pareto(points) == ["cheap", "mid", "dear"]


def test_each_model_and_loss_is_judged_against_its_own_base_model_untrained(tmp_path):
    # Given a compare over two base models (sweep.models): "small" starts far below "large"
    sweep = FakeSweep(tmp_path)
    model = "lossweep.model"
    for label, shift in (("large", 0.0), ("small", -0.30)):
        items = np.clip(sweep.difficulty + shift, 0, 1)
        sweep.run(
            "baseline",
            f"baseline (untrained) @ {label}",
            metrics={JUDGE: float(items.mean()), SELECT: 0.5 + shift},
            items=items,
            **{model: label},
        )
        for loss, lift in (("Alpha", 0.15), ("Beta", 0.0)):
            name = f"{loss} @ {label}"
            for score in (0.5 + shift + lift, 0.45 + shift + lift):
                config = json.dumps({"loss": name})
                sweep.run("tune", name, metrics={SELECT: score}, **{"lossweep.trial_config": config, model: label})
            for seed in (1042, 1043, 1044):
                noisy = np.clip(items + lift + sweep.rng.normal(0, 0.05, len(QUERIES)), 0, 1)
                sweep.run(
                    "seeds",
                    name,
                    metrics={JUDGE: float(noisy.mean())},
                    items=noisy,
                    **{"lossweep.seed": str(seed), model: label},
                )

    # When the leaderboard is built
    board = build_leaderboard(sweep.tracker, sweep.parent)

    # Then every (model, loss) is a row, the best pair is selected, and each has its model's untrained row
    rows = {row.loss: row for row in board.rows}
    assert set(rows) == {"Alpha @ large", "Beta @ large", "Alpha @ small", "Beta @ small"}
    assert board.best.loss == "Alpha @ large"
    assert set(board.baselines) == {"large", "small"} and rows["Alpha @ small"].model == "small"
    # Alpha on the small model is below the large model untrained, yet beats its own untrained model
    assert rows["Alpha @ small"].score.value < board.baselines["large"].score.value
    assert rows["Alpha @ small"].vs_baseline.shows_difference() and rows["Alpha @ small"].vs_baseline.value > 0.1
    assert abs(rows["Beta @ small"].vs_baseline.value) < 0.05
    assert "large: best loss on the selection set Alpha" in board.verdict
    assert "small: best loss on the selection set Alpha" in board.verdict
    assert "beat it: Alpha @ small" in board.verdict
    columns, records = board.table()
    assert [r[1] for r in records[-2:]] == ["untrained model @ large", "untrained model @ small"]
    assert all(len(record) == len(columns) for record in records)
