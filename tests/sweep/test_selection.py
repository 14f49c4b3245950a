"""Choosing each loss's configuration: the best trial, or the best mean of its top trials re-trained with
fresh seeds, which shrinks the winner's curse (by simulation, through the real choice). No Ray."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from lossweep.sweep.protocol import Phase, Tag, TrialState
from lossweep.sweep.selection import best_run, choose, top_configs

METRIC = "eval/val/ndcg_at_10"


def run(phase: str, config: int, value: float, loss: str = "Alpha", start: int = 0) -> SimpleNamespace:
    tags = {
        Tag.PHASE: phase,
        Tag.STATE: TrialState.COMPLETED,
        Tag.LOSS: loss,
        Tag.TRIAL_CONFIG: json.dumps({"loss": loss, loss: {"margin": config}}),
    }
    return SimpleNamespace(
        info=SimpleNamespace(run_id=f"{phase}-{config}-{value}", start_time=start),
        data=SimpleNamespace(tags=tags, metrics={METRIC: value}),
    )


def test_the_best_trial_without_rescoring_and_the_best_mean_with_it():
    tuning = [run(Phase.TUNE, c, v) for c, v in [(1, 0.60), (2, 0.58), (3, 0.50)]]
    assert [c["Alpha"]["margin"] for c in top_configs(tuning, METRIC, 2)["Alpha"]] == [1, 2]
    plain = choose(tuning, METRIC)["Alpha"]
    assert plain.config["Alpha"]["margin"] == 1 and plain.score == 0.60 and not plain.rescored
    rescored = tuning + [run(Phase.RESCORE, 1, 0.50), run(Phase.RESCORE, 2, 0.57), run(Phase.RESCORE, 2, 0.59)]
    choice = choose(rescored, METRIC, top=2)["Alpha"]
    assert choice.config["Alpha"]["margin"] == 2 and choice.rescored and choice.runs == 3
    assert abs(choice.score - 0.58) < 1e-12 and choice.best_trial == 0.60  # (0.58 + 0.57 + 0.59) / 3


def test_tied_trials_give_one_winner_whatever_order_the_store_lists_them_in():
    # Tiny trials tie often; the driver (which checkpoint the verdict scores) and the leaderboard read
    # the runs in different orders and must still name the same trial: the one that started first.
    tied = [run(Phase.SEARCH, 1, 0.5, start=20), run(Phase.SEARCH, 2, 0.5, start=10), run(Phase.SEARCH, 3, 0.4)]
    for runs in (tied, tied[::-1]):
        assert choose(runs, METRIC)["Alpha"].config["Alpha"]["margin"] == 2
        assert best_run(runs, METRIC) is tied[1]


def test_rescoring_shrinks_the_gap_between_selection_and_truth():
    # Each loss: 8 configurations of true quality ~ N(0.5, 0.02), each run scoring truth + N(0, 0.02) on
    # the selection set. The chosen configuration's reported score minus its true quality is the
    # winner's curse; a fresh run (the verdict) scores its truth on average.
    rng = np.random.default_rng(0)
    gaps = {"best trial": [], "rescored": []}
    truths = {"best trial": [], "rescored": []}
    for _ in range(400):
        truth = rng.normal(0.5, 0.02, 8)
        runs = [run(Phase.TUNE, c, truth[c] + rng.normal(0, 0.02)) for c in range(8)]
        for label, top in (("best trial", None), ("rescored", 3)):
            found = list(runs)
            if top:
                for config in top_configs(runs, METRIC, top)["Alpha"]:
                    c = config["Alpha"]["margin"]
                    found += [run(Phase.RESCORE, c, truth[c] + rng.normal(0, 0.02)) for _ in range(2)]
            choice = choose(found, METRIC, top)["Alpha"]
            chosen = choice.config["Alpha"]["margin"]
            gaps[label].append(choice.score - truth[chosen])
            truths[label].append(truth[chosen])
    curse, rescored = np.mean(gaps["best trial"]), np.mean(gaps["rescored"])
    assert curse > 0.015 and rescored < 0.5 * curse, (curse, rescored)  # the inflation more than halves
    assert np.mean(truths["rescored"]) >= np.mean(truths["best trial"])  # and a truly better choice on average
