"""A search that starts from what earlier sweeps found (`sweep.warm_start: true`).

The tracking store holds every completed trial of earlier sweeps. Those that asked the same question
(the same training data fingerprint, model, steps and selection metric) and sampled a point of this
sweep's space are told to Optuna as finished trials before the first new one, so TPE's model starts
from them; they cost no trial of this sweep's budget. A point outside this space's ranges, or from
a loss this sweep does not search, is left out and counted.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna

from .protocol import Phase, Tag, TrialState
from .space import DefineByRun, Space
from .spec import Params, Spec
from .tracking import Tracker

TUNING_PHASES = (Phase.SEARCH, Phase.TUNE)  # trials that sampled a point; seeds and rescores re-train one


@dataclass
class Prior:
    """One earlier trial: its sampled configuration (the trial config, nested) and its score."""

    config: dict[str, Any]
    value: float
    run_id: str
    point: optuna.trial.FrozenTrial  # the config as a trial of its study's space (params, distributions)


@dataclass
class WarmStart:
    """Earlier trials per study of this sweep, and what was left out."""

    priors: dict[str, list[Prior]] = field(default_factory=dict)
    sweeps: int = 0  # earlier sweeps they came from
    left_out: int = 0  # same question, but a point this space cannot hold

    def describe(self) -> str:
        told = sum(len(p) for p in self.priors.values())
        if not told and not self.left_out:
            return "warm start: no earlier sweep on this data, model, budget and metric"
        outside = f"; {self.left_out} left out (outside this space)" if self.left_out else ""
        sweeps = f"{self.sweeps} earlier sweep{'s' if self.sweeps != 1 else ''}"
        return f"warm start: {told} trials of {sweeps} told to Optuna{outside}"


def earlier_trials(
    tracker: Tracker, parent: str, spec: Spec, metric: str, fingerprint: str, studies: dict[str, Space]
) -> WarmStart:
    """The completed tuning trials of other sweeps that asked this sweep's question, by study."""
    experiments = [e.experiment_id for e in tracker.client.search_experiments()]
    same_data = f"tags.`{Tag.DATA_FINGERPRINT}` = '{fingerprint}'"
    completed = f"tags.`{Tag.STATE}` = '{TrialState.COMPLETED}'"
    runs = tracker.client.search_runs(experiments, filter_string=f"{same_data} and {completed}", max_results=5000)
    found = WarmStart()
    parents = set()
    for run in runs:
        tags, params = run.data.tags, run.data.params
        same = (
            tags.get("mlflow.parentRunId") not in (None, parent)
            and tags.get(Tag.PHASE) in TUNING_PHASES
            and Tag.TRIAL_CONFIG in tags
            and metric in run.data.metrics
            and params.get(Params.STEPS) == str(spec.training.steps)
            and params.get(Params.MODEL) == spec.model
        )
        if not same:
            continue
        config = json.loads(tags[Tag.TRIAL_CONFIG])
        points = ((name, point_of(space, config)) for name, space in studies.items())
        name, point = next(((n, p) for n, p in points if p is not None), (None, None))
        if point is None:
            found.left_out += 1
            continue
        value = float(run.data.metrics[metric])
        found.priors.setdefault(name, []).append(Prior(config, value, run.info.run_id, point))
        parents.add(tags["mlflow.parentRunId"])
    found.sweeps = len(parents)
    return found


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested trial config as Optuna's `a/b` keys (what `studies.nest` undoes)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}/")
        else:
            out[f"{prefix}{key}"] = value
    return out


def point_of(space: Space, config: dict[str, Any]) -> optuna.trial.FrozenTrial | None:
    """The config as a trial of `space` (its Optuna params and distributions), or None when the space
    cannot hold it: another loss, or a value outside a range or the choices."""
    wanted = flat(config)
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings():  # a value outside a range is reported below, not as a warning
        warnings.simplefilter("ignore")
        scratch.enqueue_trial(wanted, skip_if_exists=False)
        trial = scratch.ask()
        try:
            DefineByRun(space)(trial)
        except ValueError:  # a categorical value (a loss, say) that is not among today's choices
            return None
    for name, distribution in trial.distributions.items():
        if name not in wanted or trial.params[name] != wanted[name]:
            return None
        if not distribution._contains(distribution.to_internal_repr(wanted[name])):
            return None
    if "loss" not in trial.params and len(space.candidates) == 1 and config.get("loss") != space.candidates[0].name:
        return None  # a one-loss study has no loss parameter: the loss must match by name
    return optuna.trial.create_trial(params=trial.params, distributions=trial.distributions, value=0.0)


def tell(study: optuna.Study, priors: list[Prior]) -> None:
    """Add the priors to their study as completed trials, with the scores they had."""
    for prior in priors:
        point = prior.point
        study.add_trial(
            optuna.trial.create_trial(params=point.params, distributions=point.distributions, value=prior.value)
        )
