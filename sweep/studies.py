"""Optuna studies behind one Ray Tune run: one study for a search, one study per loss for a compare.

Ray's `OptunaSearch` drives a single study. A fair compare gives every loss its own TPE study and
the same number of trials, yet should run trials of different losses side by side when the cluster
has room. `StudySearch` holds one study per group, hands out trials round-robin until each study has
its budget, and tells each study the outcome of its own trials only. A trial that ASHA stopped early
is told to Optuna as PRUNED (with the values it reported on the way), so TPE ranks it below finished
trials instead of learning from a truncated score as if it were final.

`PerStudyScheduler` keeps one ASHA per study for the same reason: a loss's trial is stopped for
being worse than that loss's other trials, never for another loss's.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState as OptunaTrialState  # not lossweep's TrialState (protocol.py)
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from .protocol import Report
from .space import DefineByRun, Space
from .warmstart import Prior, tell


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """Seeded TPE (conditional: `group=True` splits the space by the loss picked) or random sampling."""
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # `group=True` is marked experimental by Optuna; it is what conditional spaces need.
    warnings.filterwarnings("ignore", message=r"Argument ``group`` is an experimental", category=ExperimentalWarning)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Optuna keys `a/b` as Tune nests them: {"a": {"b": ...}}."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return nested


class _Saved:
    """Tune saves a searcher's or scheduler's state with the experiment, for `Tuner.restore`."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))


class StudySearch(_Saved, Searcher):
    """A Tune searcher over named Optuna studies, each with its own space and trial budget."""

    def __init__(
        self,
        spaces: dict[str, Space],
        trials: int,
        *,
        metric: str,
        total_steps: int,
        sampler: str,
        seed: int,
        starts: dict[str, dict[str, Any]] | None = None,
        priors: dict[str, list[Prior]] | None = None,
    ) -> None:
        """`starts`: each study's first trial (Optuna params; its loss's registry defaults, say);
        `priors`: earlier sweeps' trials, told to each study as finished before its first trial."""
        super().__init__(metric=metric, mode="max")
        self.spaces = spaces
        self.budget = trials
        self.total_steps = total_steps
        self.studies = {
            name: optuna.create_study(direction="maximize", sampler=make_sampler(sampler, seed + i), study_name=name)
            for i, name in enumerate(spaces)
        }
        for name, found in (priors or {}).items():
            tell(self.studies[name], found)
        for name, point in (starts or {}).items():
            if point:
                self.studies[name].enqueue_trial(point)
        self.started = dict.fromkeys(spaces, 0)
        self.live: dict[str, tuple[str, optuna.Trial]] = {}

    def suggest(self, trial_id: str) -> dict | None:
        open_studies = [name for name in self.studies if self.started[name] < self.budget]
        if not open_studies:
            return Searcher.FINISHED
        name = min(open_studies, key=lambda n: self.started[n])  # round-robin, in the spec's order
        trial = self.studies[name].ask()
        constants = DefineByRun(self.spaces[name])(trial) or {}
        self.started[name] += 1
        self.live[trial_id] = (name, trial)
        return {"trial": nest(trial.params | constants)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.live and self.metric in result and Report.STEP in result:
            with warnings.catch_warnings():  # a restarted worker reports steps again; Optuna keeps the first
                warnings.simplefilter("ignore", UserWarning)
                self.live[trial_id][1].report(float(result[self.metric]), int(result[Report.STEP]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return
        name, trial = self.live.pop(trial_id)
        value = None if not result else result.get(self.metric)
        if error or value is None:
            self.studies[name].tell(trial, state=OptunaTrialState.FAIL)
        elif int(result.get(Report.STEP, 0)) < self.total_steps:
            self.studies[name].tell(trial, state=OptunaTrialState.PRUNED)
        else:
            self.studies[name].tell(trial, float(value))


class PerStudyScheduler(_Saved, FIFOScheduler):
    """One scheduler (ASHA) per study, made on first use; trials run in the order they were added.

    `by_loss`: a compare, whose studies are its losses; else one study holds every trial.
    """

    def __init__(self, make: Callable[[], TrialScheduler], by_loss: bool) -> None:
        super().__init__()
        self.make, self.by_loss = make, by_loss
        self.schedulers: dict[str, TrialScheduler] = {}

    def _of(self, trial: Trial) -> TrialScheduler:
        name = trial.config["trial"]["loss"] if self.by_loss else ""
        if name not in self.schedulers:
            self.schedulers[name] = self.make()
        return self.schedulers[name]

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{name}: {scheduler.debug_string()}" for name, scheduler in self.schedulers.items())
