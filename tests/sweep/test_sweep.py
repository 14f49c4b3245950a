"""Sweeps on local Ray: search (TPE + ASHA), compare (per-loss studies side by side, seeds, verdict),
selection apart from judgement, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from lossweep.losses import get_entry
from lossweep.sweep.phases import run_sweep
from lossweep.sweep.report import report
from lossweep.sweep.reproduce import reproduce
from lossweep.sweep.spec import parse_spec
from lossweep.sweep.tracking import Tracker, git_commit

# What a sweep's terminal never shows: bytecode listings, Ray's internal warnings, progress bars of
# the workers, Tune's own status tables.
NOISE = ("LOAD_GLOBAL", "RETURN_VALUE", "core_worker.cc", "PreemptionWatcher", "Loading weights", "Trial status:")
METRIC = "eval/nli-val/cosine_accuracy"  # selection: rows carved from the training triplets
VERDICT = "eval/nli/cosine_accuracy"  # verdict: SNLI test, scored only once every choice is made


def sweep_spec(data_dir, model, tmp_path, sweep: dict, name: str) -> dict:
    return {
        "name": name,
        "data_dir": str(data_dir),
        "model": model,
        "train": {"path": "snli", "split": "dev", "view": "triplets", "limit": 300},
        "eval": [
            {"type": "triplet", "from_train": {"size": 60}, "name": "nli-val"},
            {"type": "triplet", "path": "snli", "split": "test", "view": "triplets", "limit": 200, "name": "nli"},
        ],
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"batch_size": 16, "steps": 4, "learning_rate": 1e-3, "log_every_steps": 2},
        "evaluation": {"every_steps": 2, "at_start": False},
        "resources": {"workers": 1},
        "output_dir": str(tmp_path / "runs"),
        "mlflow": {"experiment": name},
        "sweep": {"select_on": "nli-val"} | sweep,
    }


def children(uri: str, parent: str, phase: str | None = None) -> list:
    runs = Tracker(uri).children(parent)
    return [r for r in runs if phase is None or r.data.tags["lossweep.phase"] == phase]


@pytest.mark.slow
def test_search_sweep_parent_children_own_params_and_pruning(ray_local, data_dir, tiny_model_path, tmp_path):
    sweep = {
        "mode": "search",
        "losses": ["MultipleNegativesRankingLoss", "TripletLoss"],
        "trials": 5,
        "shared": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
        # reduction_factor 4: at the step-2 rung a trial goes on only if it is in the top quarter so far.
        "reduction_factor": 4,
        "max_concurrent": 2,
        "seed": 3,
    }
    spec = parse_spec(sweep_spec(data_dir, tiny_model_path, tmp_path, sweep, "unit-search"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = run_sweep(spec, tracking_uri=uri)

    client = MlflowClient(uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.data.tags["lossweep.role"] == "sweep" and parent.data.tags["lossweep.mode"] == "search"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "leaderboard.csv",
        "leaderboard.md",
        "search_space.json",
        "plots",
    }
    runs = children(uri, parent.info.run_id, "search")
    assert len(runs) == 5
    losses = {r.data.tags["lossweep.loss"] for r in runs}
    assert losses == {"MultipleNegativesRankingLoss", "TripletLoss"}
    for run in runs:
        own = {p.name for p in get_entry(run.data.tags["lossweep.loss"]).params}
        sampled = {k.removeprefix("loss.params.") for k in run.data.params if k.startswith("loss.params.")}
        assert sampled and sampled <= own, (run.data.tags["lossweep.loss"], sampled - own)
        assert run.data.tags["lossweep.trial_state"] in ("completed", "pruned")
        assert run.info.status == "FINISHED"
    pruned = [r for r in runs if r.data.tags["lossweep.trial_state"] == "pruned"]
    assert pruned, "ASHA stopped no trial"
    for run in pruned:
        # Tune's view: the last result it acted on. (A tiny trial may log a later step before it is
        # stopped; only completed trials count in the leaderboard.)
        assert int(run.data.tags["lossweep.last_step"]) < 4
    board = outcome.leaderboard
    assert board.best is not None and board.best.loss in losses
    completed = [r for r in runs if r.data.tags["lossweep.trial_state"] == "completed"]
    top = max(r.data.metrics[METRIC] for r in completed)
    (winner,) = [r for r in completed if r.info.run_id == board.best.best_run_id]  # one of the best (ties happen)
    assert board.best.selection == winner.data.metrics[METRIC] == top
    # Finished trials keep their final model only: no optimiser state, no earlier checkpoint.
    kept = [Path(r.data.tags["lossweep.checkpoint"]) for r in runs if "lossweep.checkpoint" in r.data.tags]
    assert len(kept) >= len(completed)
    for folder in kept:
        assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "model"]
        assert [p.name for p in folder.parent.glob("checkpoint_*")] == [folder.name]
    # The search saw the selection set only; the winner's checkpoint and the untrained model are then
    # scored on the verdict set, and the leaderboard reports both scores.
    assert not any(k.startswith("eval/nli/") for r in runs for k in r.data.metrics)
    (verdict,) = children(uri, parent.info.run_id, "verdict")
    (baseline,) = children(uri, parent.info.run_id, "baseline")
    assert verdict.data.tags["lossweep.scores_run"] == winner.info.run_id
    assert verdict.info.start_time >= max(r.info.end_time for r in runs)
    assert board.best.score.value == pytest.approx(verdict.data.metrics[VERDICT], abs=1e-6)
    assert board.baseline.score.value == pytest.approx(baseline.data.metrics[VERDICT], abs=1e-6)
    lift = verdict.data.metrics[VERDICT] - baseline.data.metrics[VERDICT]
    assert board.best.vs_baseline.value == pytest.approx(lift, abs=1e-6)
    assert "Judged on nli (cosine_accuracy; never seen by the search)" in board.verdict
    # Every run records the checkout the sweep was started from, though trials are created in Tune's
    # actors, which run in Ray's own folders.
    commit, dirty = git_commit()
    assert commit != "unknown", "the tests run from a git checkout"
    for run in [parent, *children(uri, parent.info.run_id)]:
        assert run.data.tags["lossweep.git_commit"] == commit, run.info.run_name
        assert run.data.tags["lossweep.git_dirty"] == str(dirty).lower()
    # The data each trial used, as MLflow dataset inputs: the UI's Dataset column shows them.
    for run in runs:
        recorded = {(d.dataset.name, d.tags[0].value): d.dataset.digest for d in run.inputs.dataset_inputs}
        assert recorded[("snli (split dev, view triplets)", "training")] == run.data.tags["lossweep.data_fingerprint"]
        assert {name for name, context in recorded if context == "evaluation"} == {"nli-val", "nli"}
    # Each trial trained in its Tune trial's process and says what it cost beyond training; a Ray
    # Train worker re-running the winner (`lossweep reproduce`) gives the same numbers.
    for run in runs:
        assert 0 < run.data.metrics["trial/startup_seconds"] and 0 < run.data.metrics["trial/teardown_seconds"]
    again = reproduce(Tracker(uri), winner.info.run_id)
    assert again.matched and again.max_difference <= 1e-6, again.differences
    # A later sweep of the same question starts from these trials: told to Optuna, not re-run.
    warm = parse_spec(
        sweep_spec(data_dir, tiny_model_path, tmp_path, sweep | {"trials": 2, "warm_start": True}, "warm")
    )
    later = run_sweep(warm, tracking_uri=uri)
    told = Tracker(uri).read_dict(later.parent_run_id, "warm_start.json")
    assert sorted(told["search"]) == sorted(r.info.run_id for r in completed)
    counts = json.loads(client.get_run(later.parent_run_id).data.tags["lossweep.warm_start"])
    assert counts == {"search": len(completed)}
    assert f"warm start: {len(completed)} trials of 1 earlier sweep told to Optuna" in later.notes
    assert len(children(uri, later.parent_run_id, "search")) == 2  # the priors cost no trial


@pytest.mark.slow
def test_compare_runs_the_studies_side_by_side_and_judges_only_after_selection(
    ray_local, data_dir, tiny_model_path, tmp_path
):
    sweep = {
        "mode": "compare",
        "losses": ["MultipleNegativesRankingLoss", "TripletLoss"],
        "trials": 1,
        "seeds": 3,
        "max_concurrent": 2,  # the local Ray has 2 CPUs; a trial takes one
        "scheduler": "none",
    }
    spec = parse_spec(sweep_spec(data_dir, tiny_model_path, tmp_path, sweep, "unit-compare"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = run_sweep(spec, tracking_uri=uri)

    tuning = children(uri, outcome.parent_run_id, "tune")
    seeds = children(uri, outcome.parent_run_id, "seeds")
    (baseline,) = children(uri, outcome.parent_run_id, "baseline")
    assert sorted(r.data.tags["lossweep.loss"] for r in tuning) == ["MultipleNegativesRankingLoss", "TripletLoss"]
    # The two losses' studies ran side by side, not one after the other: Tune started both trials
    # (their first loss less their start-up) before either ended. A 4-step trial is over in seconds, so
    # its MLflow run can end before a busy machine has started the other trial's process.
    client = MlflowClient(uri)

    def tune_started(run) -> float:
        first_loss = min(m.timestamp for m in client.get_metric_history(run.info.run_id, "train/loss")) / 1000
        return first_loss - run.data.metrics["trial/startup_seconds"]

    assert max(tune_started(r) for r in tuning) < min(r.info.end_time / 1000 for r in tuning)
    # The verdict set was never scored before every tuning trial had ended; seed runs score it once, at the end
    tuned = max(r.info.end_time for r in tuning)
    assert not any(k.startswith("eval/nli/") for r in tuning for k in r.data.metrics)
    assert baseline.info.start_time >= tuned and min(r.info.start_time for r in seeds) >= tuned
    for run in seeds:
        assert [m.step for m in client.get_metric_history(run.info.run_id, VERDICT)] == [4]
    by_loss = sorted((r.data.tags["lossweep.loss"], int(r.data.tags["lossweep.seed"])) for r in seeds)
    assert by_loss == [(loss, seed) for loss in sorted(sweep["losses"]) for seed in (1042, 1043, 1044)]

    board = outcome.leaderboard
    assert [len(row.seeds) for row in board.rows] == [3, 3]
    selected = board.best
    assert selected.selection == max(r.data.metrics[METRIC] for r in tuning)
    (other,) = [row for row in board.rows if row is not selected]
    assert other.vs_selected is not None and 0 <= other.vs_selected.p <= 1
    assert other.vs_selected.low <= other.vs_selected.value <= other.vs_selected.high
    assert all(row.vs_baseline is not None and row.score.low <= row.score.value for row in board.rows)
    assert board.baseline.score.value == pytest.approx(baseline.data.metrics[VERDICT], abs=1e-6)
    assert board.test.startswith("two-level bootstrap over seeds and queries")
    assert (
        f"Selected on nli-val (cosine_accuracy, the best completed of 1 tuning trials per loss): {selected.loss}"
        in (board.verdict)
    )
    assert "Every loss received its full budget (1 tuning trials, 3 seed runs)" in board.verdict
    # The same leaderboard comes back from MLflow alone.
    again, parent = report(Tracker(uri), "unit-compare", log=False)
    assert parent == outcome.parent_run_id
    assert [(r.loss, len(r.seeds), round(r.score.value, 9)) for r in again.rows] == [
        (r.loss, len(r.seeds), round(r.score.value, 9)) for r in board.rows
    ]


@pytest.mark.slow
def test_a_compare_over_base_models_gives_each_model_and_loss_a_study_and_its_own_untrained_row(
    ray_local, data_dir, tiny_model_path, tiny_prompted_model_path, tmp_path
):
    models = [
        {"model": tiny_model_path, "name": "tiny"},
        {"model": tiny_prompted_model_path, "name": "prompted", "max_seq_length": 64},  # its own E5 prompts
    ]
    sweep = {
        "mode": "compare",
        "models": models,
        "losses": ["MultipleNegativesRankingLoss"],
        "trials": 1,
        "seeds": 3,
        "max_concurrent": 2,
        "scheduler": "none",
    }
    spec = parse_spec(sweep_spec(data_dir, tiny_model_path, tmp_path, sweep, "unit-models"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = run_sweep(spec, tracking_uri=uri)

    # One study per (model, loss), each with the same budget: 1 tuning trial and 3 seed runs
    tuning = children(uri, outcome.parent_run_id, "tune")
    seeds = children(uri, outcome.parent_run_id, "seeds")
    names = ["MultipleNegativesRankingLoss @ prompted", "MultipleNegativesRankingLoss @ tiny"]
    assert sorted(r.data.tags["lossweep.loss"] for r in tuning) == names
    assert sorted(r.data.tags["lossweep.loss"] for r in seeds) == sorted(names * 3)
    # Each run trains its own model, with that model's sequence length and prompts
    for run in tuning + seeds:
        label = run.data.tags["lossweep.model"]
        prompted = label == "prompted"
        assert run.data.params["model"] == (tiny_prompted_model_path if prompted else tiny_model_path)
        assert run.data.params["max_seq_length"] == ("64" if prompted else "null")
        assert run.data.params["applied_prompts.query"] == ("query: " if prompted else "")
    # The untrained row is per model, scored with the model's own settings; each row is judged against it
    baselines = {r.data.tags["lossweep.model"]: r for r in children(uri, outcome.parent_run_id, "baseline")}
    assert set(baselines) == {"tiny", "prompted"}
    board = outcome.leaderboard
    assert set(board.baselines) == {"tiny", "prompted"}
    for row in board.rows:
        base = baselines[row.model].data.metrics[VERDICT]
        assert board.baselines[row.model].score.value == pytest.approx(base, abs=1e-6)
        assert row.vs_baseline.value == pytest.approx(row.score.value - base, abs=1e-6)
    assert board.best.loss in names
    assert "tiny: best loss on the selection set MultipleNegativesRankingLoss" in board.verdict
    assert "prompted: best loss on the selection set MultipleNegativesRankingLoss" in board.verdict
    assert "untrained model @ prompted" in board.to_markdown()


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_duplicates(data_dir, tiny_model_path, tmp_path):
    sweep = {
        "mode": "search",
        "losses": ["MultipleNegativesRankingLoss", "TripletLoss"],
        "trials": 2,
        "scheduler": "none",
        "max_concurrent": 1,  # the second trial is still to run when the first has finished
    }
    spec = sweep_spec(data_dir, tiny_model_path, tmp_path, sweep, "unit-resume")
    # Trials of a few seconds (~0.05 s a step): the second is still training when Ctrl-C comes
    spec["training"] |= {"steps": 200, "log_every_steps": 50}
    spec["evaluation"]["every_steps"] = 100
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = ["lossweep", "sweep", str(path), "--tracking-uri", uri]

    # Given a sweep interrupted with Ctrl-C once its first trial has finished
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    client = MlflowClient(uri)
    finished_before = _wait_for_finished_trial(client, first)
    first.send_signal(signal.SIGINT)
    output = first.communicate(timeout=300)[0]
    assert first.returncode == 130, output[-3000:]
    assert "resume: lossweep sweep" in output

    # When it is resumed
    second = subprocess.run(command + ["--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    # Then the terminal showed lossweep's table and verdict, and Ray's own output went to the log file
    for shown in (output, second.stdout + second.stderr):
        for noise in NOISE:
            assert noise not in shown, f"{noise!r} reached the terminal:\n{shown[-3000:]}"
    for column in ("trial", "phase", "loss", "params", "step", "train loss", "cosine_accuracy", "state", "elapsed"):
        assert column in second.stdout
    assert (
        "leaderboard: search" in second.stdout and "runs:       http://127.0.0.1:5000/#/experiments/" in second.stdout
    )
    log = Path(second.stdout.split("logs of Ray and the workers: ", 1)[1].split()[0])
    # A 1-worker trial trains in its Tune trial's process; its output is tagged with the trial function
    assert "(trainable pid=" in log.read_text()

    # Then every trial ran once, in one MLflow run, and the finished ones were not rerun
    parent = json.loads((tmp_path / "runs" / "unit-resume" / "sweep.json").read_text())["parent_run_id"]
    runs = children(uri, parent, "search")
    trial_ids = [r.data.tags["lossweep.trial_id"] for r in runs]
    assert len(runs) == 2 and len(set(trial_ids)) == 2
    assert all(r.data.tags["lossweep.trial_state"] == "completed" for r in runs)
    for run_id, end_time in finished_before.items():
        run = client.get_run(run_id)
        assert run.info.end_time == end_time
        steps = [m.step for m in client.get_metric_history(run_id, METRIC)]
        assert steps == sorted(set(steps)), "a finished trial was trained again"


def _wait_for_finished_trial(client: MlflowClient, process: subprocess.Popen, timeout: float = 600) -> dict[str, int]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        try:
            runs = client.search_runs(
                [e.experiment_id for e in client.search_experiments()],
                filter_string="tags.`lossweep.trial_state` = 'completed' and attributes.status = 'FINISHED'",
            )
        except Exception:  # the store may not exist yet
            runs = []
        if runs:
            return {r.info.run_id: r.info.end_time for r in runs}
        time.sleep(2)
    raise AssertionError("no trial finished in time")


@pytest.mark.slow
def test_a_compare_plans_rescoring_adaptive_seeds_budgets_and_a_guard(ray_local, data_dir, tiny_model_path, tmp_path):
    # Given a compare that plans its verdict, re-trains each loss's best trial, adds seeds only where a
    # comparison is undecided, judges at half the steps too, and guards STS similarity
    sweep = {
        "mode": "compare",
        "losses": ["MultipleNegativesRankingLoss", "TripletLoss"],
        "trials": 2,
        "seeds": {"min": 3, "max": 4},
        "rescore": {"top": 1, "seeds": 1},
        "budgets": [0.5, 1.0],
        "scheduler": "none",
        "max_concurrent": 2,
    }
    data = sweep_spec(data_dir, tiny_model_path, tmp_path, sweep, "unit-decisive")
    data["eval"].append(
        {"type": "sts", "path": "stsbenchmark", "split": "test", "limit": 100, "name": "sts-guard", "role": "guard"}
    )
    uri, said = f"sqlite:///{tmp_path}/mlflow.db", []
    # When it runs
    outcome = run_sweep(parse_spec(data), tracking_uri=uri, say=said.append)
    # Then the plan was said before the first trial and logged
    assert said and said[0].startswith("plan: nli (cosine_accuracy, 200 queries x 3 to 4 seeds): differences below")
    client = MlflowClient(uri)
    parent = client.get_run(outcome.parent_run_id)
    planned = json.loads(parent.data.tags["lossweep.plan"])
    assert set(planned["nli"]) == {"vs selected", "vs untrained"} and all(v > 0 for v in planned["nli"].values())
    # each loss's best trial was re-trained once, and chosen by its mean
    rescored = children(uri, parent.info.run_id, "rescore")
    assert len(rescored) == 2 and all(r.data.tags["lossweep.trial_state"] == "completed" for r in rescored)
    assert all(set(r.data.metrics) >= {METRIC} and VERDICT not in r.data.metrics for r in rescored)
    # seeds: 3 each, and a 4th only for a loss whose comparison the rule left undecided
    seeds = children(uri, parent.info.run_id, "seeds")
    counts = {
        loss: sum(r.data.tags["lossweep.loss"] == loss for r in seeds)
        for loss in ("MultipleNegativesRankingLoss", "TripletLoss")
    }
    assert all(n in (3, 4) for n in counts.values()), counts
    rounds = client.download_artifacts(parent.info.run_id, "seed_rounds.json", str(tmp_path))
    assert json.loads(Path(rounds).read_text())["seeds"] == counts
    # the verdict at both budgets, the guard set tested, and the words that say so
    board = outcome.leaderboard
    assert sorted(board.budgets) == [2, 4] and board.rescored and board.adaptive == (3, 4)
    assert "eval/sts-guard/spearman_cosine" in board.guard_metrics
    assert all("eval/sts-guard/spearman_cosine" in row.judged for row in board.rows)
    assert "Guard sts-guard" in board.verdict and "Seeds were adaptive (3 to 4 per loss" in board.verdict
    assert "At budgets of 2, 4 steps" in board.verdict
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/cost.png"} <= artifacts
