"""The sweep's figures: score per loss with CI bars, score against Matryoshka size, optimisation history."""

from __future__ import annotations

import math
import re
from collections import defaultdict

import matplotlib

from .protocol import Phase, Tag, TrialState

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def sweep_figures(board) -> dict[str, plt.Figure]:
    """File name -> figure, for the parent run's artifacts."""
    from .importance import figures

    return {
        "plots/score_by_loss.png": _score_by_loss(board),
        "plots/score_by_dim.png": _score_by_dim(board),
        "plots/history.png": _history(board),
    } | figures(board.studies)


def _score_by_loss(board) -> plt.Figure:
    """Compare: each loss's verdict score with its 95% interval; search: each loss's best selection
    score. The untrained model is the dashed line."""
    judged = board.mode == "compare" and board.verdict_metric is not None
    if judged:
        rows = [r for r in board.rows if r.score is not None][::-1]
        values = [r.score.value for r in rows]
        errors = [[r.score.value - r.score.low for r in rows], [r.score.high - r.score.value for r in rows]]
        base = board.baseline.score.value if board.baseline and board.baseline.score else None
    else:
        rows = [r for r in board.rows if r.selection is not None][::-1]
        values, errors = [r.selection for r in rows], None
        base = board.baseline.selection if board.baseline else None
    figure, axis = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    axis.barh([r.loss for r in rows], values, xerr=errors, capsize=4)
    if base is not None:
        axis.axvline(base, color="black", linestyle="--", label="untrained model")
        axis.legend(fontsize=7)
    if judged:
        axis.set_xlabel(f"{board.verdict_metric} (mean, 95% CI over seeds and queries)")
    else:
        axis.set_xlabel(f"{board.metric} (best completed trial)")
    axis.set_title(f"{board.mode}: score per loss")
    figure.tight_layout()
    return figure


def _score_by_dim(board) -> plt.Figure:
    """Each loss's headline metric at every evaluated embedding size (its best run)."""
    figure, axis = plt.subplots(figsize=(7, 4))
    runs = {r.info.run_id: r for r in board.runs}
    metric = board.verdict_metric if board.mode == "compare" and board.verdict_metric else board.metric
    metric = re.sub(r"/dim_\d+$", "", metric)
    pattern = re.compile(re.escape(metric) + r"/dim_(\d+)$")
    for row in board.rows:
        run = runs.get(row.best_run_id)
        if run is None:
            continue
        points = sorted((int(m.group(1)), v) for k, v in run.data.metrics.items() if (m := pattern.match(k)))
        if points:
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=row.loss)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("embedding size (Matryoshka truncation)")
    axis.set_ylabel(metric)
    axis.set_title("score against embedding size")
    if axis.lines:
        axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _history(board) -> plt.Figure:
    """Every trial's final (or, if stopped, last) score in start order, and the running best."""
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
    axis.set_xlabel("trial (start order)")
    axis.set_ylabel(board.metric)
    axis.set_title("optimisation history")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure
