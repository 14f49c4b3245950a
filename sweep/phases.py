"""A sweep on the driver: its saved state, its parent run, the mined negatives, its phases, the scores
of the untrained model and of a search's winner, and the leaderboard.

Two modes, and one rule: the eval set named by `sweep.select_on` (default: the first) drives every
search decision; the other eval sets give the verdict and are scored only once those decisions are
made.
- `search`: the loss is one more categorical; TPE (seeded, conditional) looks for the best
  configuration on the selection set, ASHA stops hopeless trials early. Then the winner's checkpoint
  and the untrained model are scored on the verdict sets.
- `compare`: the fair shoot-out. Every candidate loss gets the same tuning budget (same trials, same
  steps, its own TPE study and its own ASHA), and the studies run side by side; each loss's best
  configuration that ran its whole budget is then re-trained with k fresh seeds and judged on the
  verdict sets beside the untrained model (`verdict.py` does the statistics).

`--resume` re-enters the first phase that did not finish; finished trials are not run again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from lossweep.losses import LossConfig, get_entry

from . import storage
from .checkpoint import drop_checkpoints, drop_untracked
from .console import Plan
from .leaderboard import Leaderboard
from .plan import make_plan
from .prepare import Prepared, prepare, recorded
from .protocol import SEED_ROUNDS_ARTIFACT, SWEEP_ROLE, Phase, Report, Tag, TrialState
from .rounds import replay
from .runs import delete_lost_runs, keep_final_checkpoints
from .selection import best_run, choose, top_configs
from .space import Space, build_space, grid_configs
from .spec import MODEL_SEPARATOR, Params, Spec, SpecError
from .tasks import mine_negatives, start_scoring
from .tracking import DataInput, Provenance, Tracker, flatten, worker_tracking_uri
from .tuning import (
    SEARCH_STUDY,
    CloseChildRuns,
    TrialContext,
    run_phase,
    runs_in_trial,
    search_args,
    sweep_metric,
    trainable,
    trial_resources,
    verdict_metric,
    worker_group_run,
)
from .verdict import build_leaderboard
from .warmstart import Prior, earlier_trials

STATE_FILE = "sweep.json"
WARM_START_ARTIFACT = "warm_start.json"  # the earlier trials told to Optuna, by study


# --- The driver ------------------------------------------------------------------------------------------


@dataclass
class SweepOutcome:
    parent_run_id: str
    leaderboard: Leaderboard
    run_url: str
    notes: list[str]
    links: list[str]  # the parent run and the experiment's runs in the MLflow UI


def _load_state(root: str) -> dict:
    text = storage.read_text(storage.join(root, STATE_FILE))
    return json.loads(text) if text is not None else {}


def _save_state(root: str, state: dict) -> None:
    storage.write_text(storage.join(root, STATE_FILE), json.dumps(state, indent=2))


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a stop) before a phase finished; its state is saved for `--resume`."""


@dataclass
class Sweep:
    """A sweep under way: its spec, space, tracking store, parent run and saved state."""

    spec: Spec
    space: Space
    tracker: Tracker
    parent: str
    root: str  # <output_dir>/<name>: a local folder or a URI
    state: dict
    resume: bool
    data_fingerprint: str
    provenance: Provenance
    inputs: list[DataInput]

    @property
    def metric(self) -> str:
        return sweep_metric(self.spec)

    def trainable(self, phase: str):
        """The phase's Tune trainable with the resources of one trial."""
        context = TrialContext(
            spec_data=self.spec.to_dict(),
            space=self.space,
            parent_run_id=self.parent,
            tracking_uri=worker_tracking_uri(self.tracker.uri),  # rewritten here: a trial's actor may run on any node
            data_fingerprint=self.data_fingerprint,
            provenance=self.provenance,
            inputs=self.inputs,
            phase=phase,
        )
        return tune.with_resources(tune.with_parameters(trainable, context=context), trial_resources(self.spec))

    def tune_phase(self, name: str, args: dict[str, Any], expected: int, tag: str | None = None) -> None:
        """Run a Tune phase unless a previous run of this sweep finished it; its runs are tagged with
        `tag` (default: its name; the rounds of adaptive seeds are all `seeds`).

        Tune catches Ctrl-C itself, saves the experiment (running trials as running) and returns, but
        then marks the trials it stopped as terminated. So a phase is done only when each of its
        trials failed in Tune or had its MLflow run closed as completed, pruned or failed.
        """
        if name in self.state["phases_done"]:
            return
        tag = tag or name
        callbacks = [CloseChildRuns(self.tracker.uri, self.parent, self.spec.training.steps, self.spec.output_dir)]
        grid = run_phase(
            name,
            self.trainable(tag),
            root=self.root,
            resume=self.resume,
            callbacks=callbacks,
            in_trial=runs_in_trial(self.spec),
            max_failures=self.spec.resources.max_failures,
            **args,
        )
        closed = {
            r.data.tags.get(Tag.TRIAL_ID)
            for r in self.tracker.children(self.parent)
            if r.data.tags.get(Tag.PHASE) == tag and r.data.tags.get(Tag.STATE) in TrialState.closed()
        }
        ended = sum(1 for r in grid if r.error is not None or (r.metrics or {}).get(Report.TRIAL_ID) in closed)
        if ended < expected:
            raise SweepInterrupted(f"phase {name!r} stopped after {ended} of {expected} trials")
        lost = delete_lost_runs(self.tracker, self.parent, tag)
        if self.spec.sweep.keep_checkpoints == "final":
            keep_final_checkpoints(self.tracker, self.parent, tag)
            self.drop_lost_checkpoints(name, grid, lost)
        self.done(name)

    def drop_lost_checkpoints(self, name: str, grid: tune.ResultGrid, lost: list[str]) -> None:
        """The checkpoints of attempts Tune never recorded (their trials ran again under new ids): in
        trial folders of the phase's experiment that no result has, and in a lost worker group's run folder."""
        drop_untracked(storage.join(self.root, name), {storage.basename(result.path) for result in grid})
        output = storage.absolute(self.spec.output_dir)
        for run_id in lost:
            trial_id = self.tracker.client.get_run(run_id).data.tags.get(Tag.TRIAL_ID)
            if trial_id:
                drop_checkpoints(storage.join(output, worker_group_run(self.spec, trial_id)))

    def done(self, name: str) -> None:
        self.state["phases_done"].append(name)
        _save_state(self.root, self.state)

    def start_scoring(self, name: str, model: str, sets: list[str], tags: dict[str, str], step: int, label: str = ""):
        """Start scoring a model that is not trained here (a Ray task) into a child run of its own; the
        task runs beside whatever the driver does next. `finish_scoring` waits for it. `label`: the base
        model of `sweep.models` whose settings (sequence length, prompts) it is scored with."""
        phase = f"{name}{MODEL_SEPARATOR}{label}" if label else name  # done once per base model
        if phase in self.state["phases_done"] or not sets:
            return None
        tags = tags | ({Tag.MODEL: label} if label else {})
        for run in self.tracker.children(self.parent):  # an interrupted attempt: start it again
            if _scores(run, name, label) and run.info.status == "RUNNING":
                self.tracker.end_run(run.info.run_id, "KILLED")
        run_tags = self.provenance.tags(self.spec.hash(), self.data_fingerprint) | {
            Tag.PHASE: name,
            Tag.SWEEP: self.spec.name,
            Tag.MODE: self.spec.sweep.mode,
        }
        run_id = self.tracker.start_run(
            self.spec.mlflow.experiment,
            f"{tags[Tag.LOSS]} ({name})",
            {Params.MODEL: model, "eval.sets": json.dumps(sets)},
            run_tags | tags,
            parent_run_id=self.parent,
        )
        self.tracker.log_inputs(run_id, [data for data in self.inputs if data.name in sets])
        spec = self.spec.model_specs().get(label, self.spec)
        return phase, run_id, step, start_scoring(spec, model, sets, self.tracker.uri, run_id, step)

    def finish_scoring(self, pending) -> None:
        """Wait for scoring tasks started by `start_scoring` (one, or a list), then close each run and mark
        its phase done."""
        for one in pending if isinstance(pending, list) else [pending]:
            if one is None:
                continue
            name, run_id, step, task = one
            ray.get(task)
            self.tracker.set_tags(run_id, {Tag.STATE: TrialState.COMPLETED, Tag.LAST_STEP: str(step)})
            self.tracker.end_run(run_id, "FINISHED")
            self.done(name)


def run_sweep(
    spec: Spec,
    *,
    source: str = "spec",
    resume: bool = False,
    tracking_uri: str | None = None,
    watch: Callable[[str, Plan], AbstractContextManager] | None = None,
    say: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep a spec describes; returns the leaderboard and the parent run.

    `say(line)` is told the verdict's plan before the first trial; `watch(tracking_uri, plan)` is
    entered while the trials run (the live table of trials).
    """
    if spec.sweep is None:
        raise SpecError(source, ["sweep: missing; add a sweep section (mode, losses, trials...) or use lossweep train"])
    sweep, notes = open_sweep(prepare(spec, source, tracking_uri), source, resume)
    for line in _verdict_plan(sweep):
        (say or (lambda line: None))(line)
    return run_phases(sweep, notes, watch)


def open_sweep(prepared: Prepared, source: str, resume: bool) -> tuple[Sweep, list[str]]:
    """The sweep a prepared spec names: a new one (its parent run and saved state created), or, with
    `resume`, the one started before, refused if the spec or the training data changed since."""
    spec = prepared.spec
    root = storage.join(spec.output_dir, spec.name)
    state = _load_state(root)
    if state and not resume:
        raise SpecError(
            source,
            [f"name: a sweep named {spec.name!r} already exists in {root}; resume it with --resume, or rename it"],
        )
    notes = [] if state or not resume else [f"no earlier sweep named {spec.name!r} in {root}: starting it"]
    if state and state["spec_hash"] != spec.hash():
        raise SpecError(
            source, [f"--resume: the spec changed since {spec.name!r} started; rename it to start a new sweep"]
        )
    if state and state.get("data_fingerprint", prepared.data_fingerprint) != prepared.data_fingerprint:
        raise SpecError(
            source, [f"--resume: the training data changed since {spec.name!r} started; rename it to start a new sweep"]
        )
    tracker = Tracker(prepared.tracking_uri)
    space, space_notes = build_space(spec, prepared.loaded.train)
    space = _with_data_params(space, prepared.loaded.train)
    notes += space_notes
    if not spec.verdict_sets():
        notes.append(
            f"no verdict set: the best score is measured on {spec.selection_set().label!r}, the set that chose it, "
            "so it is optimistic; add an eval set that the search never sees to judge the winner"
        )
    if not state:
        data = recorded(spec, prepared.tracking_uri)
        tags = prepared.provenance.tags(spec.hash(), prepared.data_fingerprint) | {
            Tag.ROLE: SWEEP_ROLE,
            Tag.SWEEP: spec.name,
            Tag.MODE: spec.sweep.mode,
            Tag.METRIC: sweep_metric(spec),
            Tag.SELECT_ON: spec.selection_set().label,
            Tag.VERDICT_METRICS: json.dumps([verdict_metric(spec, ref) for ref in spec.verdict_sets()]),
            Tag.GUARD_METRICS: json.dumps([verdict_metric(spec, ref) for ref in spec.guard_sets()]),
        }
        parent = tracker.start_run(spec.mlflow.experiment, spec.name, flatten(data), tags, data)
        tracker.log_inputs(parent, prepared.inputs)
        tracker.log_dict(parent, space.describe(), "search_space.json")
        state = {
            "parent_run_id": parent,
            "spec_hash": spec.hash(),
            "data_fingerprint": prepared.data_fingerprint,
            "phases_done": [],
        }
        _save_state(root, state)
    sweep = Sweep(
        spec,
        space,
        tracker,
        state["parent_run_id"],
        root,
        state,
        resume and bool(state),
        prepared.data_fingerprint,
        prepared.provenance,
        prepared.inputs,
    )
    return sweep, notes


def run_phases(
    sweep: Sweep, notes: list[str], watch: Callable[[str, Plan], AbstractContextManager] | None = None
) -> SweepOutcome:
    """Mine what the sweep trains on, run its phases (search, or tune, rescore, seeds), score the
    untrained model, and build and log the leaderboard."""
    spec, tracker = sweep.spec, sweep.tracker
    plan = Plan(
        sweep.parent, _planned_trials(spec, sweep.space), spec.sweep.max_concurrent, spec.training.steps, sweep.metric
    )
    with (watch or (lambda uri, plan: nullcontext()))(tracker.uri, plan):
        if any(c.mined for c in sweep.space.candidates):
            notes = notes + _mine(sweep)
        priors = None
        if spec.sweep.warm_start:
            warm = earlier_trials(tracker, sweep.parent, spec, sweep.metric, sweep.data_fingerprint, _studies(sweep))
            told = {name: [p.run_id for p in found] for name, found in warm.priors.items()}
            tracker.log_dict(sweep.parent, told, WARM_START_ARTIFACT)  # every run id; a tag would cut them
            tracker.set_tags(sweep.parent, {Tag.WARM_START: json.dumps({n: len(ids) for n, ids in told.items()})})
            notes, priors = notes + [warm.describe()], warm.priors
        if spec.sweep.mode == "search":
            _search(sweep, priors)
        else:
            _compare(sweep, priors)
    board = build_leaderboard(tracker, sweep.parent)
    board.log(tracker, sweep.parent)
    tracker.end_run(sweep.parent, "FINISHED")
    return SweepOutcome(sweep.parent, board, tracker.run_url(sweep.parent), notes, tracker.links(sweep.parent))


def _verdict_plan(sweep: Sweep) -> list[str]:
    """The verdict's plan (`plan.py`), made once before the first trial and logged on the parent run
    (`plan.json`, tag `lossweep.plan`); a resumed sweep says it again."""
    if "plan" not in sweep.state:
        lines: list[str] = []
        if sweep.spec.verdict_sets():
            plan = make_plan(sweep.spec, len(sweep.space.candidates), sweep.tracker, sweep.data_fingerprint)
            lines = plan.lines()
            sweep.tracker.log_dict(sweep.parent, plan.to_dict(), "plan.json")
            sweep.tracker.set_tags(sweep.parent, {Tag.PLAN: json.dumps(plan.detectable())})
        sweep.state["plan"] = lines
        _save_state(sweep.root, sweep.state)
    return sweep.state["plan"]


def _planned_trials(spec: Spec, space: Space) -> int:
    """How many trials the sweep trains (a grid's size, else trials per study, and a compare's seeds)."""
    studies = [space] if spec.sweep.mode == "search" else [space.only(c.name) for c in space.candidates]
    if spec.sweep.sampler == "grid":
        tuning = sum(len(grid_configs(study)) for study in studies)
    else:
        tuning = spec.sweep.trials * len(studies)
    if spec.sweep.mode != "compare":
        return tuning
    rescore = spec.sweep.rescore
    rescored = len(space.candidates) * rescore.top * rescore.seeds if rescore else 0
    return tuning + rescored + len(space.candidates) * spec.sweep.seed_counts()[0]


def _mine(sweep: Sweep) -> list[str]:
    """Every distinct mining config the sweep may pick, mined once before any trial (or found in the
    cache); each summary goes to the parent run."""
    notes, keys = [], []
    for variant in sweep.spec.mining_variants():
        directory, summary, fresh = mine_negatives(variant)
        key = storage.basename(directory)
        keys.append(key)
        sweep.tracker.log_dict(sweep.parent, summary, f"negatives/{key}.json")
        how = f"mined in {summary['mining_seconds']:.0f} s" if fresh else "found in the cache"
        notes.append(
            f"negatives {key}: {summary['rows']} rows x {summary['negatives_per_anchor']} negatives, "
            f"{summary['dropped_false_negatives']} judged-relevant documents dropped; {how} ({directory})"
        )
    sweep.tracker.set_tags(sweep.parent, {Tag.NEGATIVES_KEYS: json.dumps(keys)})
    return notes


def _studies(sweep: Sweep) -> dict[str, Space]:
    """The Optuna studies of the sweep's tuning phase: one for a search, one per loss for a compare."""
    if sweep.spec.sweep.mode == "search":
        return {SEARCH_STUDY: sweep.space}
    return {candidate.name: sweep.space.only(candidate.name) for candidate in sweep.space.candidates}


def _search(sweep: Sweep, priors: dict[str, list[Prior]] | None = None) -> None:
    """TPE + ASHA on the selection set; then the winner and the untrained model on the verdict sets."""
    args, expected = search_args(sweep.spec, _studies(sweep), sweep.metric, priors)
    sweep.tune_phase(Phase.SEARCH, args, expected)
    baseline = _start_baseline(sweep)  # scored beside the winner
    verdict = [ref.label for ref in sweep.spec.verdict_sets() + sweep.spec.guard_sets()]
    winner = _best_trial(sweep.tracker, sweep.parent, sweep.metric, phase=Phase.SEARCH)
    if winner is not None and verdict:
        checkpoint = winner.data.tags.get(Tag.CHECKPOINT, "")
        scoring = sweep.start_scoring(
            Phase.VERDICT,
            storage.join(checkpoint, "model"),
            verdict,
            {Tag.LOSS: winner.data.tags[Tag.LOSS], Tag.SCORES_RUN: winner.info.run_id},
            step=sweep.spec.training.steps,
            label=winner.data.tags.get(Tag.MODEL, ""),
        )
        sweep.finish_scoring(scoring)
    sweep.finish_scoring(baseline)


def _compare(sweep: Sweep, priors: dict[str, list[Prior]] | None = None) -> None:
    """Per-loss studies side by side on the selection set, then seeds of each loss's best on all sets:
    `sweep.seeds` of them, or (adaptive) `min`, then rounds of one more where a comparison is undecided."""
    spec = sweep.spec
    args, expected = search_args(spec, _studies(sweep), sweep.metric, priors)
    sweep.tune_phase(Phase.TUNE, args, expected)
    rescore = spec.sweep.rescore
    if rescore is not None:  # each loss's top trials again, with fresh seeds: the same budget for every loss
        tops = top_configs(sweep.tracker.children(sweep.parent), sweep.metric, rescore.top)
        configs = [config for found in tops.values() for config in found]
        first = spec.training.seed + 2000
        args = _seed_args(spec, configs, range(first, first + rescore.seeds))
        sweep.tune_phase(Phase.RESCORE, args, len(configs) * rescore.seeds)
    chosen = choose(sweep.tracker.children(sweep.parent), sweep.metric, rescore.top if rescore else None)
    best = {loss: choice.config for loss, choice in chosen.items()}
    baseline = _start_baseline(sweep)  # scored beside the seed runs
    fewest, most = spec.sweep.seed_counts()
    first = spec.training.seed + 1000
    sweep.tune_phase(
        Phase.SEEDS, _seed_args(spec, list(best.values()), range(first, first + fewest)), len(best) * fewest
    )
    if most > fewest and spec.verdict_sets():
        sweep.finish_scoring(baseline)  # the rule compares each loss with the untrained model too
        baseline = None
        verdict = verdict_metric(spec, spec.verdict_sets()[0])
        for seeds in range(fewest, most):
            rounds = replay(sweep.tracker, sweep.parent, sweep.metric, verdict, fewest, most, first)
            grow = [loss for loss in rounds.needs_seed() if loss in best]
            if not grow:
                break
            args = _seed_args(spec, [best[loss] for loss in grow], [first + seeds])
            sweep.tune_phase(f"{Phase.SEEDS}-{seeds + 1}", args, len(grow), tag=Phase.SEEDS)
        rounds = replay(sweep.tracker, sweep.parent, sweep.metric, verdict, fewest, most, first)
        sweep.tracker.log_dict(sweep.parent, rounds.to_dict(), SEED_ROUNDS_ARTIFACT)
    sweep.finish_scoring(baseline)


def _seed_args(spec: Spec, configs: list[dict], seeds) -> dict[str, Any]:
    """Tune arguments that train every configuration with every seed, first to last."""
    return {
        "param_space": {"trial": tune.grid_search(configs), "seed": tune.grid_search(list(seeds))},
        "tune_config": {"max_concurrent_trials": spec.sweep.max_concurrent, "scheduler": FIFOScheduler()},
    }


def _start_baseline(sweep: Sweep) -> list:
    """The model before training (each base model of `sweep.models`), scored once on every eval set,
    beside what the sweep does next. It starts only once every search decision is made: no verdict
    set is scored before that."""
    sets = [ref.label for ref in sweep.spec.eval]
    return [
        sweep.start_scoring(
            Phase.BASELINE,
            spec.model,
            sets,
            {Tag.LOSS: f"baseline (untrained){MODEL_SEPARATOR if label else ''}{label}"},
            step=0,
            label=label,
        )
        for label, spec in sweep.spec.model_specs().items()
    ]


def _scores(run, phase: str, label: str) -> bool:
    """Whether a child run is the scoring run of `phase` for the base model `label`."""
    tags = run.data.tags
    return tags.get(Tag.PHASE) == phase and tags.get(Tag.MODEL, "") == label


def _best_trial(tracker: Tracker, parent: str, metric: str, phase: str):
    """The completed trial of a phase with the best selection score (never a pruned one)."""
    return best_run([r for r in tracker.children(parent) if r.data.tags.get(Tag.PHASE) == phase], metric)


def _with_data_params(space: Space, train) -> Space:
    """Each candidate with the loss parameters its registry entry reads off the data (num_labels), for
    a modifier's base too."""

    def filled(config: LossConfig) -> LossConfig:
        if config.base is not None:
            return dataclasses.replace(config, base=filled(config.base))
        extra = get_entry(config.name).from_data(config.params, train)
        return dataclasses.replace(config, params=dict(config.params) | extra)

    candidates = tuple(dataclasses.replace(c, config=filled(c.config)) for c in space.candidates)
    return dataclasses.replace(space, candidates=candidates)
