"""Each loss's configuration, chosen on the selection set: its best completed tuning trial, or, with
`sweep.rescore: {top: k, seeds: r}`, the best mean over its k best trials each re-trained with r more
seeds.

The best of several trials on a small selection set is partly the luckiest: its score is inflated
(the winner's curse), most for the losses with the most trials and hyperparameters. Re-training the
few best with fresh seeds and choosing by the mean of each configuration's runs both picks the truly
better configuration more often and reports a selection score closer to what a fresh run scores
(`tests/sweep/test_selection.py` shows both by simulation). One function chooses, for the driver
(which configuration the seed runs train) and for the verdict (which score the leaderboard shows).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from .protocol import Phase, Tag, TrialState


@dataclass
class Choice:
    """A loss's chosen configuration: its trial config, the score it was chosen by (a mean when
    rescored), the best single trial's score, and the runs behind it."""

    config: dict
    score: float
    best_trial: float  # the best single tuning trial's score (what a choice without rescoring reports)
    run_id: str  # its tuning trial
    runs: int = 1  # runs averaged
    rescored: bool = False
    means: dict[str, float] = field(default_factory=dict)  # config (JSON) -> mean, for the rescored top


def _key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def rank(run, metric: str) -> tuple:
    """Sort key, best first: the higher score, then (a tie) the trial that started first, then the run
    id, so the driver and the leaderboard always name the same winner."""
    return (-run.data.metrics[metric], run.info.start_time or 0, run.info.run_id)


def best_run(runs: list, metric: str):
    """The completed run with the best score on `metric` (see `rank`), or None."""
    completed = [r for r in runs if r.data.tags.get(Tag.STATE) == TrialState.COMPLETED and metric in r.data.metrics]
    return min(completed, key=lambda r: rank(r, metric), default=None)


def tuning_trials(runs: list, metric: str) -> dict[str, list[tuple[float, dict, str]]]:
    """Per loss, its completed tuning trials as (score, config, run id), best first (see `rank`)."""
    trials: dict[str, list[tuple[float, dict, str]]] = defaultdict(list)
    for run in sorted((r for r in runs if metric in r.data.metrics), key=lambda r: rank(r, metric)):
        tags = run.data.tags
        if tags.get(Tag.PHASE) not in (Phase.TUNE, Phase.SEARCH) or tags.get(Tag.STATE) != TrialState.COMPLETED:
            continue
        value = run.data.metrics.get(metric)
        if value is None:
            continue
        trials[tags.get(Tag.LOSS, "?")].append((value, json.loads(tags.get(Tag.TRIAL_CONFIG, "{}")), run.info.run_id))
    return dict(trials)


def top_configs(runs: list, metric: str, top: int) -> dict[str, list[dict]]:
    """Per loss, the configurations of its `top` best completed tuning trials (to re-train)."""
    return {loss: [config for _, config, _ in found[:top]] for loss, found in tuning_trials(runs, metric).items()}


def choose(runs: list, metric: str, top: int | None = None) -> dict[str, Choice]:
    """Per loss, its chosen configuration: the best tuning trial, or (`top`, with rescore runs among
    `runs`) the best mean selection score over each of the top configurations' tuning trial and its
    rescore runs."""
    rescores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in runs:
        tags = run.data.tags
        if tags.get(Tag.PHASE) != Phase.RESCORE or tags.get(Tag.STATE) != TrialState.COMPLETED:
            continue
        value = run.data.metrics.get(metric)
        if value is not None:
            config = json.loads(tags.get(Tag.TRIAL_CONFIG, "{}"))
            rescores[(tags.get(Tag.LOSS, "?"), _key(config))].append(value)
    chosen: dict[str, Choice] = {}
    for loss, found in sorted(tuning_trials(runs, metric).items()):
        best_value, best_config, best_run = found[0]
        choice = Choice(best_config, best_value, best_value, best_run)
        if top and any(key[0] == loss for key in rescores):
            for value, config, run_id in found[:top]:
                scores = [value] + rescores.get((loss, _key(config)), [])
                mean = sum(scores) / len(scores)
                choice.means[_key(config)] = mean
                if not choice.rescored or mean > choice.score:
                    choice.config, choice.score, choice.run_id, choice.runs = config, mean, run_id, len(scores)
                    choice.rescored = True
        chosen[loss] = choice
    return chosen
