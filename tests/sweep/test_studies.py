"""The Tune searcher over Optuna studies and the per-study scheduler, driven by hand: no Ray cluster."""

from __future__ import annotations

from functools import partial

from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from lossweep.losses import get_entry
from lossweep.sweep.space import Space, build_space, starting_point
from lossweep.sweep.spec import parse_spec
from lossweep.sweep.studies import PerStudyScheduler, StudySearch

METRIC = "eval/val/ndcg_at_10"


def compare_spec(**shared):
    return parse_spec(
        {
            "name": "s",
            "train": {"path": "x"},
            "loss": {"name": "MultipleNegativesRankingLoss"},
            "eval": [{"type": "retrieval", "path": "x"}],
            "training": {"steps": 10},
            "sweep": {
                "scheduler": "none",
                "losses": ["MultipleNegativesSymmetricRankingLoss", "TripletLoss"],
                "shared": {"learning_rate": {"low": 1e-5, "high": 1e-4, "log": True}} | shared,
            },
        }
    )


def compare_space(**shared) -> dict[str, Space]:
    space, _ = build_space(compare_spec(**shared), None)
    return {c.name: space.only(c.name) for c in space.candidates}


def searcher(trials: int = 2) -> StudySearch:
    return StudySearch(compare_space(), trials, metric=METRIC, total_steps=10, sampler="tpe", seed=0)


def test_each_study_gets_its_budget_round_robin_and_only_its_own_parameters():
    search = searcher(trials=2)
    configs = [search.suggest(f"t{i}") for i in range(4)]
    assert search.suggest("t4") == StudySearch.FINISHED
    losses = [c["trial"]["loss"] for c in configs]
    assert losses == ["MultipleNegativesSymmetricRankingLoss", "TripletLoss"] * 2  # side by side, not in turn
    for config in configs:
        trial = config["trial"]
        assert set(trial) == {"loss", trial["loss"], "shared"}  # its own parameters only
        assert 1e-5 <= trial["shared"]["learning_rate"] <= 1e-4


def test_outcomes_reach_only_the_trials_own_study_and_pruned_trials_are_pruned():
    search = searcher(trials=3)
    ids = [f"t{i}" for i in range(6)]
    configs = {i: search.suggest(i) for i in ids}
    search.on_trial_result("t0", {METRIC: 0.3, "step": 5})
    search.on_trial_complete("t0", {METRIC: 0.4, "step": 10})  # ran its whole budget
    search.on_trial_result("t2", {METRIC: 0.1, "step": 5})
    search.on_trial_complete("t2", {METRIC: 0.1, "step": 5})  # stopped at step 5 by ASHA
    search.on_trial_complete("t4", None, error=True)
    study = search.studies["MultipleNegativesSymmetricRankingLoss"]
    assert all(configs[i]["trial"]["loss"] == "MultipleNegativesSymmetricRankingLoss" for i in ("t0", "t2", "t4"))
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert study.trials[0].value == 0.4 and study.trials[1].intermediate_values == {5: 0.1}
    assert all(t.state == TrialState.RUNNING for t in search.studies["TripletLoss"].trials)


def test_the_searcher_resumes_where_it_stopped(tmp_path):
    search = searcher(trials=2)
    for i in range(3):
        search.suggest(f"t{i}")
    search.on_trial_complete("t0", {METRIC: 0.5, "step": 10})
    search.save(str(tmp_path / "state.pkl"))

    restored = searcher(trials=2)
    restored.restore(str(tmp_path / "state.pkl"))
    assert restored.started == {"MultipleNegativesSymmetricRankingLoss": 2, "TripletLoss": 1}
    assert restored.suggest("t3")["trial"]["loss"] == "TripletLoss"  # the one trial still owed
    assert restored.suggest("t4") == StudySearch.FINISHED
    restored.on_trial_complete("t2", {METRIC: 0.6, "step": 10})  # a trial that was running at the save
    assert [t.value for t in restored.studies["MultipleNegativesSymmetricRankingLoss"].trials] == [0.5, 0.6]


def test_asha_compares_a_trial_with_its_own_losss_trials_only():
    asha = partial(ASHAScheduler, time_attr="step", metric=METRIC, mode="max", max_t=10, grace_period=5)
    scheduler = PerStudyScheduler(asha, by_loss=True)

    def trial(loss: str, name: str) -> Trial:
        t = Trial("trainable", config={"trial": {"loss": loss}}, trial_id=name, stub=True)
        scheduler.on_trial_add(None, t)
        return t

    strong = [trial("A", f"a{i}") for i in range(2)]
    weak = trial("B", "b0")
    for t, value in zip(strong, [0.9, 0.8], strict=True):
        scheduler.on_trial_result(None, t, {"step": 5, METRIC: value})
    # B's first trial is far below A's, but it is alone in B's study: it goes on
    assert scheduler.on_trial_result(None, weak, {"step": 5, METRIC: 0.1}) == TrialScheduler.CONTINUE
    assert set(scheduler.schedulers) == {"A", "B"}
    # a third A trial below A's others is stopped at the rung
    assert scheduler.on_trial_result(None, trial("A", "a2"), {"step": 5, METRIC: 0.2}) == TrialScheduler.STOP


def test_each_study_starts_where_an_expert_starts_then_samples():
    # Given a compare whose spec trains at 2e-5 and whose batch-size range leaves the spec's 32 out
    spec = compare_spec(batch_size={"low": 48, "high": 64})
    spaces = compare_space(batch_size={"low": 48, "high": 64})
    starts = {name: starting_point(space, spec) for name, space in spaces.items()}
    search = StudySearch(spaces, 3, metric=METRIC, total_steps=10, sampler="tpe", seed=0, starts=starts)
    first, second = (
        [search.suggest(f"t{i}")["trial"] for i in range(2)],
        [search.suggest(f"u{i}")["trial"] for i in range(2)],
    )
    # Then each loss's first trial is its registry defaults at the spec's learning rate
    symmetric, triplet = first
    assert symmetric["MultipleNegativesSymmetricRankingLoss"]["scale"] == 20.0
    assert triplet["TripletLoss"]["triplet_margin"] == get_entry("TripletLoss").param("triplet_margin").default
    assert symmetric["shared"]["learning_rate"] == triplet["shared"]["learning_rate"] == 2e-5
    assert 48 <= symmetric["shared"]["batch_size"] <= 64  # out of the range: sampled, not forced
    # and the next ones are the sampler's
    assert second[0]["MultipleNegativesSymmetricRankingLoss"]["scale"] != 20.0
