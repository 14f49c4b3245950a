"""The sweep's figures: score per loss, score against embedding size, the optimisation history, and
for a compare with budgets the learning curves and the cost of each loss. Every figure marks the
untrained model, draws only what was measured (a figure with one embedding size is not drawn) and
shows the leaderboard's numbers: `figure_data` is what they draw, and the tests compare it with the
leaderboard.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

import matplotlib
import numpy as np

from .protocol import Phase, Tag, TrialState

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

UNTRAINED = {"color": "black", "linestyle": "--", "label": "untrained model"}


def sweep_figures(board) -> dict[str, plt.Figure]:
    """File name -> figure, for the parent run's artifacts."""
    from .importance import figures

    data = figure_data(board)
    out = {"plots/score_by_loss.png": _score_by_loss(board, data), "plots/history.png": _history(board)}
    if any(len(points) > 1 for points in data["score_by_dim"].values()):
        out["plots/score_by_dim.png"] = _score_by_dim(board, data)
    if len(board.budgets) > 1:
        out["plots/learning_curves.png"] = _learning_curves(board, data)
    if board.mode == "compare" and data["cost"]:
        out["plots/cost.png"] = _cost(board, data)
    return out | figures(board.studies)


def _dims(metrics: dict[str, float], metric: str) -> dict[int, float]:
    pattern = re.compile(re.escape(metric) + r"/dim_(\d+)$")
    return {int(m.group(1)): v for k, v in metrics.items() if (m := pattern.match(k))}


def figure_data(board) -> dict[str, dict]:
    """What the figures draw, by figure: per loss (and the untrained model under its row name)."""
    compare = board.mode == "compare" and board.verdict_metric is not None
    rows = [r for r in board.rows if (r.score if compare else r.selection) is not None]
    data: dict[str, dict] = {"score_by_loss": {}, "score_by_dim": {}, "learning_curve": {}, "cost": {}}
    for row in rows:
        data["score_by_loss"][row.loss] = row.score.value if compare else row.selection
    if board.baseline is not None:
        value = board.baseline.score.value if compare and board.baseline.score else board.baseline.selection
        if value is not None:
            data["score_by_loss"][board.baseline.loss] = value
    # Score against embedding size: a compare's seed runs averaged (the leaderboard's mean), a search's
    # best trials; the full size is the plain metric.
    metric = re.sub(r"/dim_\d+$", "", board.verdict_metric if compare else board.metric)
    runs = {r.info.run_id: r for r in board.runs}
    by_loss: dict[str, list] = defaultdict(list)
    for run in board.runs:
        phase, state = run.data.tags.get(Tag.PHASE), run.data.tags.get(Tag.STATE)
        if compare and phase == Phase.SEEDS and state == TrialState.COMPLETED:
            by_loss[run.data.tags.get(Tag.LOSS, "?")].append(run)
    for row in rows:
        group = by_loss.get(row.loss) if compare else [runs[row.best_run_id]] if row.best_run_id in runs else []
        points = [_dims(r.data.metrics, metric) for r in group or []]
        points = [p for p in points if p]
        if points:
            sizes = set.intersection(*(set(p) for p in points))
            data["score_by_dim"][row.loss] = {d: float(np.mean([p[d] for p in points])) for d in sorted(sizes)}
    baseline = next((r for r in board.runs if r.data.tags.get(Tag.PHASE) == Phase.BASELINE), None)
    if baseline is not None and _dims(baseline.data.metrics, metric):
        data["score_by_dim"][board.baseline.loss if board.baseline else "untrained model"] = dict(
            sorted(_dims(baseline.data.metrics, metric).items())
        )
    for step, judged in sorted(board.budgets.items()):
        for loss, entry in judged.items():
            if entry.score is not None:
                data["learning_curve"].setdefault(loss, {})[step] = entry.score.value
    if compare:
        for row in rows:
            data["cost"][row.loss] = (row.tuning.device_s + row.verdict.device_s, row.score.value)
    return data


def _untrained_value(board, data: dict) -> float | None:
    return data["score_by_loss"].get(board.baseline.loss) if board.baseline else None


def _score_by_loss(board, data: dict) -> plt.Figure:
    """Compare: each loss's verdict score with its 95% interval; search: each loss's best selection
    score. The untrained model is the dashed line."""
    judged = board.mode == "compare" and board.verdict_metric is not None
    rows = [r for r in board.rows if r.loss in data["score_by_loss"]][::-1]
    values = [data["score_by_loss"][r.loss] for r in rows]
    errors = None
    if judged:
        errors = [[r.score.value - r.score.low for r in rows], [r.score.high - r.score.value for r in rows]]
    figure, axis = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    axis.barh([r.loss for r in rows], values, xerr=errors, capsize=4)
    base = _untrained_value(board, data)
    if base is not None:
        axis.axvline(base, **UNTRAINED)
        axis.legend(fontsize=7)
    if judged:
        axis.set_xlabel(f"{board.verdict_metric} (mean, 95% CI over seeds and queries)")
    else:
        axis.set_xlabel(f"{board.metric} (best completed trial)")
    axis.set_title(f"{board.mode}: score per loss")
    figure.tight_layout()
    return figure


def _score_by_dim(board, data: dict) -> plt.Figure:
    """Each loss's headline metric at every evaluated embedding size, the untrained model dashed."""
    figure, axis = plt.subplots(figsize=(7, 4))
    for loss, points in data["score_by_dim"].items():
        style = UNTRAINED | {"label": loss} if board.baseline and loss == board.baseline.loss else {"label": loss}
        axis.plot(list(points), list(points.values()), marker="o", **style)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("embedding size (Matryoshka truncation)")
    axis.set_ylabel(board.verdict_metric if board.mode == "compare" and board.verdict_metric else board.metric)
    axis.set_title("score against embedding size" + (" (mean of the seed runs)" if board.mode == "compare" else ""))
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _history(board) -> plt.Figure:
    """Every trial's final (or, if stopped, last) score in start order, the running best, and the
    untrained model's score on the selection set."""
    figure, axis = plt.subplots(figsize=(8, 4))
    by_loss = defaultdict(list)
    best, running = -math.inf, []
    searched = [r for r in board.runs if r.data.tags.get(Tag.PHASE) in (Phase.SEARCH, Phase.TUNE)]
    for index, run in enumerate(searched):
        value = run.data.metrics.get(board.metric)
        if value is None:
            continue
        by_loss[run.data.tags.get(Tag.LOSS, "?")].append((index, value))
        if run.data.tags.get(Tag.STATE) == TrialState.COMPLETED:
            best = max(best, value)
        running.append((index, best))
    for loss, points in by_loss.items():
        axis.scatter([p[0] for p in points], [p[1] for p in points], label=loss, s=18)
    finite = [(i, b) for i, b in running if b > -math.inf]
    if finite:
        axis.step([p[0] for p in finite], [p[1] for p in finite], where="post", color="black", label="best completed")
    if board.baseline is not None and board.baseline.selection is not None:
        axis.axhline(board.baseline.selection, **UNTRAINED)
    axis.set_xlabel("trial (start order)")
    axis.set_ylabel(board.metric)
    axis.set_title("optimisation history")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _learning_curves(board, data: dict) -> plt.Figure:
    """The first verdict set against training steps and against worker-seconds, per loss, with 95%
    intervals (seeds and queries), the untrained model dashed."""
    figure, (by_step, by_cost) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for loss, curve in data["learning_curve"].items():
        steps = sorted(curve)
        entries = [board.budgets[s][loss].score for s in steps]
        low = [c - e.low for c, e in zip((curve[s] for s in steps), entries, strict=True)]
        high = [e.high - c for c, e in zip((curve[s] for s in steps), entries, strict=True)]
        by_step.errorbar(steps, [curve[s] for s in steps], yerr=[low, high], marker="o", capsize=3, label=loss)
        seconds = [board.budget_cost.get(s, {}).get(loss) for s in steps]
        if all(x is not None for x in seconds):
            by_cost.errorbar(seconds, [curve[s] for s in steps], yerr=[low, high], marker="o", capsize=3, label=loss)
    base = _untrained_value(board, data)
    for axis in (by_step, by_cost):
        if base is not None:
            axis.axhline(base, **UNTRAINED)
    by_step.set_xlabel("training steps")
    by_cost.set_xlabel("worker-seconds per seed run (GPU-seconds on GPU)")
    by_step.set_ylabel(board.verdict_metric)
    by_step.set_title("verdict at each budget")
    by_step.legend(fontsize=7)
    figure.tight_layout()
    return figure


def pareto(points: dict[str, tuple[float, float]]) -> list[str]:
    """The losses no other beats on both cost (lower) and score (higher), cheapest first."""
    front, best = [], -math.inf
    for loss, (_, score) in sorted(points.items(), key=lambda item: (item[1][0], -item[1][1])):
        if score > best:
            front.append(loss)
            best = score
    return front


def _cost(board, data: dict) -> plt.Figure:
    """Each loss's verdict score against what it cost (tuning and seed runs, worker-seconds), the
    Pareto front joined, the untrained model dashed."""
    figure, axis = plt.subplots(figsize=(7, 4))
    for loss, (cost, score) in data["cost"].items():
        axis.scatter([cost], [score], s=30)
        axis.annotate(loss, (cost, score), fontsize=7, xytext=(4, 4), textcoords="offset points")
    front = pareto(data["cost"])
    axis.plot(
        [data["cost"][x][0] for x in front], [data["cost"][x][1] for x in front], color="red", label="Pareto front"
    )
    base = _untrained_value(board, data)
    if base is not None:
        axis.axhline(base, **UNTRAINED)
    axis.set_xlabel("worker-seconds (tuning + seed runs; GPU-seconds on GPU)")
    axis.set_ylabel(board.verdict_metric)
    axis.set_title("score against cost")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure
