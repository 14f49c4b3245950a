"""Tune's side of a sweep, in milliseconds: which metric a set is judged on, what each phase's runs score,
the Tuner's arguments, and how a finished trial's MLflow run is closed (fake Tune trials, a real store)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from ray.tune.schedulers import FIFOScheduler

from lossweep.sweep.protocol import Phase, Report, Tag, TrialState
from lossweep.sweep.space import build_space, grid_configs
from lossweep.sweep.spec import parse_spec
from lossweep.sweep.studies import PerStudyScheduler, StudySearch
from lossweep.sweep.tracking import Tracker
from lossweep.sweep.tuning import CloseChildRuns, phase_spec, search_args, trial_resources, verdict_metric

SPEC = {
    "name": "t",
    "train": {"path": "x"},
    "eval": [
        {"type": "retrieval", "path": "v", "name": "val"},
        {"type": "retrieval", "path": "t", "name": "test"},
        {"type": "sts", "path": "s", "name": "sts", "role": "guard"},
    ],
    "loss": {"name": "MultipleNegativesRankingLoss"},
    "training": {"steps": 40},
    "evaluation": {"every_steps": 10},
    "sweep": {
        "mode": "compare",
        "select_on": "val",
        "metric": "eval/val/ndcg_at_10/dim_64",
        "losses": ["MultipleNegativesRankingLoss", "TripletLoss"],
        "trials": 3,
        "budgets": [0.25, 1.0],
    },
    "matryoshka_dims": [384, 64],
}


def test_a_verdict_set_of_the_selection_set_s_type_is_judged_on_the_same_metric():
    spec = parse_spec(SPEC)
    test, guard = spec.eval[1], spec.eval[2]
    assert verdict_metric(spec, test) == "eval/test/ndcg_at_10/dim_64"  # the selection metric, on its set
    assert verdict_metric(spec, guard) == "eval/sts/spearman_cosine"  # another type: its headline


def test_each_phase_scores_what_it_may():
    spec = parse_spec(SPEC)
    tuning = phase_spec(spec, Phase.TUNE, "val")
    assert tuning.evaluation.sets == ("val",) and tuning.evaluation.every_steps == 10  # ASHA reads these
    rescore = phase_spec(spec, Phase.RESCORE, "val")
    assert rescore.evaluation.sets == ("val",) and rescore.evaluation.every_steps == 0
    assert not rescore.evaluation.at_start
    seeds = phase_spec(spec, Phase.SEEDS, "val", budgets=spec.sweep.budget_steps(40))
    assert seeds.evaluation.sets is None and seeds.evaluation.every_steps == 0  # every set, at the end...
    assert seeds.evaluation.at_steps == (10,)  # ...and at the budgets before it


def test_the_tuner_gets_one_study_per_loss_or_a_grid():
    spec = parse_spec(SPEC)
    space = build_space(spec, None)[0]
    studies = {c.name: space.only(c.name) for c in space.candidates}
    args, trials = search_args(spec, studies, "eval/val/ndcg_at_10")
    assert trials == 6 and args["tune_config"]["num_samples"] == 6
    assert isinstance(args["tune_config"]["search_alg"], StudySearch)
    assert isinstance(args["tune_config"]["scheduler"], PerStudyScheduler)
    triplet = {"losses": [{"name": "TripletLoss", "params": {"distance_metric": "cosine"}}], "sampler": "grid"}
    triplet |= {"params": {"TripletLoss": {"triplet_margin": {"choices": [0.1, 0.5]}}}, "scheduler": "none"}
    grid = parse_spec(SPEC | {"sweep": SPEC["sweep"] | triplet})
    study = build_space(grid, None)[0]
    args, trials = search_args(grid, {"TripletLoss": study}, "eval/val/ndcg_at_10")
    assert trials == len(grid_configs(study)) == 2
    assert isinstance(args["tune_config"]["scheduler"], FIFOScheduler)


def fake_trial(trial_id: str, step: int, checkpoint: str | None = None) -> SimpleNamespace:
    result = {Report.STEP: step} | ({Report.CHECKPOINT_PATH: checkpoint} if checkpoint else {})
    return SimpleNamespace(trial_id=trial_id, last_result=result, checkpoint=None, error_file=None)


def test_a_finished_trial_s_run_is_closed_once_as_completed_or_pruned(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    parent = tracker.start_run("close", "sweep", {}, {})
    runs = {t: tracker.start_run("close", t, {}, {Tag.TRIAL_ID: t}, parent_run_id=parent) for t in ("a", "b")}
    closer = CloseChildRuns(tracker.uri, parent, total_steps=40, output_dir=str(tmp_path))
    closer.on_trial_start(0, [], fake_trial("a", 0))
    time.sleep(0.01)
    tracker.log_metrics(runs["a"], {"train/loss": 0.5}, step=1)  # its first step
    closer.on_trial_complete(0, [], fake_trial("a", 40, checkpoint=str(tmp_path / "ckpt")))
    closer.on_trial_complete(0, [], fake_trial("b", 20))  # stopped by ASHA at step 20 of 40
    a, b = (tracker.client.get_run(runs[t]) for t in ("a", "b"))
    assert a.data.tags[Tag.STATE] == TrialState.COMPLETED and a.info.status == "FINISHED"
    assert a.data.tags[Tag.LAST_STEP] == "40" and a.data.tags[Tag.CHECKPOINT] == str(tmp_path / "ckpt")
    assert a.data.metrics["trial/startup_seconds"] > 0 and "trial/teardown_seconds" in a.data.metrics
    assert b.data.tags[Tag.STATE] == TrialState.PRUNED and b.data.tags[Tag.LAST_STEP] == "20"
    # closed once: a second report changes nothing
    closer.on_trial_complete(0, [], fake_trial("b", 30))
    assert tracker.client.get_run(runs["b"]).data.tags[Tag.LAST_STEP] == "20"
    closer.on_trial_complete(0, [], fake_trial("unknown", 40))  # no run of its own yet: nothing to close


def test_a_worker_group_trial_is_driven_from_the_head_node_and_a_one_worker_trial_from_anywhere():
    # Ray Train attaches a run's controller to the node of the process that starts it: a trial driven
    # from a worker node would die with that node instead of restarting its workers.
    group = parse_spec(SPEC | {"resources": {"workers": 2}})
    assert trial_resources(group) == {"memory": 1, "node:__internal_head__": 0.001}
    alone = parse_spec(SPEC | {"resources": {"workers": 1, "cpus_per_worker": 2}})
    assert trial_resources(alone) == {"CPU": 2.0}
