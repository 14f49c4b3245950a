"""Warm start: the completed trials of earlier sweeps that asked the same question are told to Optuna
before the first new trial; other data, budgets, models, this sweep's own trials and points outside
the space are not. A real MLflow store; the searcher driven by hand, no Ray."""

from __future__ import annotations

import json

import pytest
from optuna.trial import TrialState as OptunaState

from lossweep.sweep.protocol import Phase, Tag, TrialState
from lossweep.sweep.space import build_space
from lossweep.sweep.spec import Params, parse_spec
from lossweep.sweep.studies import StudySearch
from lossweep.sweep.tracking import Tracker
from lossweep.sweep.tuning import SEARCH_STUDY
from lossweep.sweep.warmstart import earlier_trials, flat

METRIC = "eval/val/ndcg_at_10"
MNRL, TRIPLET = "MultipleNegativesRankingLoss", "TripletLoss"


def spec_of(mode: str):
    return parse_spec(
        {
            "name": "now",
            "train": {"path": "x"},
            "loss": {"name": MNRL},
            "eval": [
                {"type": "retrieval", "path": "x", "name": "val"},
                {"type": "retrieval", "path": "y", "name": "t"},
            ],
            "training": {"steps": 10},
            "sweep": {
                "mode": mode,
                "select_on": "val",
                "scheduler": "none",
                "warm_start": True,
                "trials": 3,
                "losses": [MNRL, TRIPLET],
                "params": {MNRL: {"scale": {"low": 10.0, "high": 40.0}}},
                "shared": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}},
            },
        }
    )


def sampled(loss: str, seed: int, **changes) -> dict:
    """A configuration an earlier sweep sampled for `loss`, as its trial's run records it."""
    space, _ = build_space(spec_of("compare"), None)
    search = StudySearch({loss: space.only(loss)}, 1, metric=METRIC, total_steps=10, sampler="random", seed=seed)
    config = search.suggest("t")["trial"]
    config[loss] |= changes
    return config


@pytest.fixture
def store(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = tracker.client.create_experiment("lossweep")

    def trial(parent, config, value, fingerprint="fp", steps=10, phase=Phase.SEARCH, state=TrialState.COMPLETED):
        tags = {
            "mlflow.parentRunId": parent,
            Tag.DATA_FINGERPRINT: fingerprint,
            Tag.STATE: state,
            Tag.PHASE: phase,
            Tag.TRIAL_CONFIG: json.dumps(config),
        }
        run = tracker.client.create_run(experiment, tags=tags)
        tracker.client.log_param(run.info.run_id, Params.STEPS, str(steps))
        tracker.client.log_param(run.info.run_id, Params.MODEL, "minilm")
        tracker.client.log_metric(run.info.run_id, METRIC, value)
        tracker.client.set_terminated(run.info.run_id)
        return run.info.run_id

    earlier, other, current = (tracker.client.create_run(experiment).info.run_id for _ in range(3))
    mnrl, triplet = sampled(MNRL, seed=1), sampled(TRIPLET, seed=2)
    told = [trial(earlier, mnrl, 0.41), trial(other, triplet, 0.35)]
    trial(earlier, sampled(MNRL, seed=3, scale=80.0), 0.50)  # scale outside today's range: left out
    trial(other, {"loss": "GISTEmbedLoss", "GISTEmbedLoss": {}, "shared": {}}, 0.5)  # a loss not searched today
    trial(earlier, mnrl, 0.60, fingerprint="other data")  # other questions: not counted at all
    trial(earlier, mnrl, 0.60, steps=200)
    trial(earlier, mnrl, 0.60, phase=Phase.SEEDS)
    trial(earlier, mnrl, 0.60, state=TrialState.PRUNED)
    trial(current, mnrl, 0.60)  # this sweep's own trial (a resumed sweep)
    return tracker, current, told


def test_earlier_sweeps_on_the_same_question_are_told_to_optuna_and_nothing_else(store):
    tracker, current, told = store
    spec = spec_of("search")
    space, _ = build_space(spec, None)
    warm = earlier_trials(tracker, current, spec, METRIC, "fp", {SEARCH_STUDY: space})
    assert sorted(p.run_id for p in warm.priors[SEARCH_STUDY]) == sorted(told)
    assert (warm.sweeps, warm.left_out) == (2, 2)
    assert warm.describe() == "warm start: 2 trials of 2 earlier sweeps told to Optuna; 2 left out (outside this space)"
    search = StudySearch(
        {SEARCH_STUDY: space}, 3, metric=METRIC, total_steps=10, sampler="tpe", seed=0, priors=warm.priors
    )
    study = search.studies[SEARCH_STUDY]
    assert sorted(t.value for t in study.trials if t.state == OptunaState.COMPLETE) == [0.35, 0.41]
    best = {k: v for k, v in flat(sampled(MNRL, seed=1)).items() if k in study.best_params}
    assert study.best_params == best and len(best) > 2
    configs = [search.suggest(f"t{i}") for i in range(3)]  # the priors cost none of the 3 new trials
    assert all(c != StudySearch.FINISHED for c in configs) and search.suggest("t3") == StudySearch.FINISHED


def test_a_compare_gives_each_loss_s_study_its_own_earlier_trials(store):
    tracker, current, told = store
    spec = spec_of("compare")
    space, _ = build_space(spec, None)
    studies = {c.name: space.only(c.name) for c in space.candidates}
    warm = earlier_trials(tracker, current, spec, METRIC, "fp", studies)
    assert {name: [p.value for p in found] for name, found in warm.priors.items()} == {MNRL: [0.41], TRIPLET: [0.35]}
    search = StudySearch(studies, 3, metric=METRIC, total_steps=10, sampler="tpe", seed=0, priors=warm.priors)
    expected = flat(sampled(TRIPLET, seed=2))
    assert search.studies[TRIPLET].best_params == {k: expected[k] for k in search.studies[TRIPLET].best_params}
