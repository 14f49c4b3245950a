"""A user's own data end to end: a CSV of pairs, selected on anchors carved from it and judged on a
held-out pairs file, and class-labelled texts judged as metric learning does."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from lossweep.sweep import data
from lossweep.sweep.phases import run_sweep
from lossweep.sweep.spec import parse_spec
from lossweep.sweep.tracking import Tracker


def write_pairs(rows, path) -> str:
    rows.rename_columns({"anchor": "question", "positive": "answer"}).to_csv(str(path), index=False)
    return str(path)


@pytest.mark.slow
def test_a_sweep_on_csv_pairs_selects_on_carved_anchors_and_judges_on_a_held_out_file(
    ray_local, data_dir, tiny_model_path, tmp_path
):
    # Given SciFact's claims and abstracts as two CSVs of (question, answer), as a user holds them
    pairs = {"question": "anchor", "answer": "positive"}
    spec = parse_spec(
        {
            "name": "own-pairs",
            "data_dir": str(tmp_path),
            "model": tiny_model_path,
            "train": {
                "path": write_pairs(data.beir_pairs(data_dir / "scifact", "train"), tmp_path / "pairs.csv"),
                "columns": pairs,
            },
            "eval": [
                {"type": "retrieval", "from_train": {"size": 40, "seed": 0}, "name": "val"},
                {"type": "retrieval", "path": "heldout.csv", "columns": pairs, "limit": 120, "name": "heldout"},
            ],
            "loss": {"name": "MultipleNegativesRankingLoss"},
            "training": {"batch_size": 16, "steps": 4, "learning_rate": 1e-3},
            "evaluation": {"at_start": False},
            "output_dir": str(tmp_path / "runs"),
            "mlflow": {"experiment": "own-pairs"},
            "sweep": {
                "mode": "search",
                "select_on": "val",
                "trials": 2,
                "scheduler": "none",
                "losses": ["MultipleNegativesRankingLoss"],
            },
        }
    )
    write_pairs(data.beir_pairs(data_dir / "scifact", "test"), tmp_path / "heldout.csv")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # When it runs
    outcome = run_sweep(spec, tracking_uri=uri)
    # Then the search read only the carved anchors, and the winner was judged on the held-out file
    runs = Tracker(uri).children(outcome.parent_run_id)
    by_phase = {}
    for run in runs:
        by_phase.setdefault(run.data.tags["lossweep.phase"], []).append(run)
    assert len(by_phase["search"]) == 2
    for run in by_phase["search"]:
        assert run.data.tags["lossweep.trial_state"] == "completed", run.data.tags.get("lossweep.error")
        assert "eval/val/ndcg_at_10" in run.data.metrics
        assert not any(name.startswith("eval/heldout/") for name in run.data.metrics)
    verdict = by_phase["verdict"][0].data.metrics
    baseline = by_phase["baseline"][0].data.metrics
    assert 0 < verdict["eval/heldout/ndcg_at_10"] <= 1 and 0 < baseline["eval/heldout/ndcg_at_10"] <= 1
    board = outcome.leaderboard
    assert board.verdict_metric == "eval/heldout/ndcg_at_10"
    assert board.best.score is not None and board.best.score.low < board.best.score.high  # over queries
    assert "Judged on heldout" in board.verdict
    parent = MlflowClient(uri).get_run(outcome.parent_run_id)
    inputs = {i.dataset.name for i in parent.inputs.dataset_inputs}
    assert {"val", "heldout"} <= inputs
