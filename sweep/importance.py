"""What mattered: per loss, how much of the selection metric each hyperparameter explains (Optuna's
fANOVA over that loss's trials), and a parallel-coordinates plot of its trials.

The studies are rebuilt from the MLflow runs alone (each trial's sampled values and score, the
distributions from the parent run's `search_space.json`), so `lossweep report` shows the same.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402

from .protocol import Phase, Tag, TrialState  # noqa: E402
from .space import TrialConfig  # noqa: E402

MIN_TRIALS = 3  # fewer completed trials explain nothing


def studies(runs: list, metric: str, space: dict[str, Any]) -> dict[str, optuna.Study]:
    """Per loss, an Optuna study of its completed search or tuning trials (value: the selection metric)."""
    by_loss: dict[str, list[tuple[dict, float]]] = defaultdict(list)
    for run in runs:
        tags = run.data.tags
        if tags.get(Tag.PHASE) not in (Phase.SEARCH, Phase.TUNE) or tags.get(Tag.STATE) != TrialState.COMPLETED:
            continue
        if metric not in run.data.metrics:
            continue
        config = TrialConfig.of_run(run)
        loss = config.loss if config.loss != "?" else tags.get(Tag.LOSS, "?")
        by_loss[loss].append((config.flat(qualified=True), run.data.metrics[metric]))
    out = {}
    for loss, trials in by_loss.items():
        distributions = _distributions(loss, trials, space)
        if len(trials) < MIN_TRIALS or not distributions:
            continue
        study = optuna.create_study(direction="maximize", study_name=loss)
        for values, value in trials:
            params = {k: _param(v) for k, v in values.items() if k in distributions}
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions={k: distributions[k] for k in params}, value=value
                )
            )
        out[loss] = study
    return out


def _param(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, tuple)) else value


def _distributions(loss: str, trials: list[tuple[dict, float]], space: dict[str, Any]) -> dict[str, BaseDistribution]:
    """The searched dimensions of a loss (and the shared ones) that its trials actually varied."""
    searched = dict(space.get("losses", {}).get(loss, {}).get("searched", {}))
    searched |= {f"shared.{k}": v for k, v in space.get("shared", {}).items()}
    searched |= {f"negatives.{k}": v for k, v in space.get("negatives", {}).items()}  # mining knobs, searched
    out: dict[str, BaseDistribution] = {}
    for name, dim in searched.items():
        seen = [values[name] for values, _ in trials if name in values]
        if len({json.dumps(v, sort_keys=True) for v in seen}) < 2:
            continue  # fANOVA needs variation
        if dim["kind"] == "float":
            out[name] = FloatDistribution(dim["low"], dim["high"], log=dim["log"])
        elif dim["kind"] == "int":
            out[name] = IntDistribution(int(dim["low"]), int(dim["high"]), log=dim["log"])
        else:
            out[name] = CategoricalDistribution([_param(c) for c in dim["choices"]])
    return out


def importances(study: optuna.Study) -> dict[str, float]:
    """Each hyperparameter's share of the variance of the selection metric (fANOVA; sums to 1)."""
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except (ValueError, RuntimeError):  # too few distinct trials for the forest
        return {}
    return {name: round(float(value), 4) for name, value in found.items()}


def figures(found: dict[str, optuna.Study]) -> dict[str, plt.Figure]:
    """A parallel-coordinates plot per loss: each trial a line from its parameters to its score."""
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for loss, study in found.items():
            axis = plot_parallel_coordinate(study)
            axis.set_title(f"{loss}: trials, parameters -> selection metric")
            axis.figure.set_size_inches(9, 4.5)
            axis.figure.tight_layout()
            out[f"plots/parallel_{loss.replace(' ', '_').replace('+', '')}.png"] = axis.figure
    return out
