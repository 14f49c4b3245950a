"""The verdict of a sweep, computed from its MLflow runs alone (so `lossweep report` can redo it).

What it was selected on, what it was judged on, what it beat and how sure it is:
- Selection: each loss's best completed trial on the selection set (`sweep.select_on`); the loss
  with the best of those is *selected*. Its choice never looks at a verdict set.
- Verdict (compare): each loss's chosen configuration re-trained with k fresh seeds, scored on the
  verdict set once training is over. Rows show mean and 95% interval over seeds and queries; each
  loss's difference to the selected loss and to the untrained model comes with an interval and a
  p-value, Holm-adjusted within each of the two families (`stats.py`). Seed runs pair by seed id;
  a missing seed is reported, never fatal.
- Verdict (search): the winner's checkpoint and the untrained model on the verdict sets; one
  training run, so the interval counts queries only (the verdict says so).
- Budget: what each loss used in tuning and in its seed runs.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import PER_QUERY_ARTIFACT
from .importance import importances, studies
from .leaderboard import Budget, Leaderboard, Row, readable, short
from .protocol import Phase, Tag, TrialState
from .space import decode_config
from .stats import ALPHA, BOOTSTRAP_SAMPLES, Interval, bootstrap_interval, holm, mean_ci, paired_t, paired_table
from .tracking import Tracker

BASELINE = "untrained model"


def build_leaderboard(tracker: Tracker, parent_run_id: str) -> Leaderboard:
    """The leaderboard of the sweep whose parent run is `parent_run_id`."""
    parent = tracker.client.get_run(parent_run_id)
    tags, params = parent.data.tags, parent.data.params
    metric = tags[Tag.METRIC]
    verdict_metrics = json.loads(tags.get(Tag.VERDICT_METRICS, "[]"))
    runs = tracker.children(parent_run_id)
    board = Leaderboard(
        tags[Tag.MODE],
        metric,
        tags.get(Tag.SELECT_ON, metric.split("/")[1]),
        verdict_metrics[0] if verdict_metrics else None,
        rows=[],
        runs=runs,
    )
    by_phase: dict[str, list] = defaultdict(list)
    for run in runs:
        by_phase[run.data.tags.get(Tag.PHASE, "")].append(run)
    judge = _Judge(tracker, board.verdict_metric)
    baseline = next((r for r in by_phase[Phase.BASELINE] if _state(r) == TrialState.COMPLETED), None)
    if baseline is not None:
        board.baseline = Row(BASELINE, selection=baseline.data.metrics.get(metric))
        board.baseline.score = judge.single(baseline)
    if board.mode == "compare":
        _compare(board, by_phase, judge, params)
    else:
        _search(board, by_phase, judge)
    board.studies = studies(runs, metric, _artifact(tracker, parent_run_id, "search_space.json") or {})
    board.importances = {loss: importances(study) for loss, study in board.studies.items()}
    return board


def _artifact(tracker: Tracker, run_id: str, path: str) -> Any:
    """A JSON artifact of a run, or None."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = tracker.client.download_artifacts(run_id, path, tmp)
        except Exception:  # not logged
            return None
        return json.loads(Path(local).read_text())


# --- Reading runs ------------------------------------------------------------------------------------------


def _state(run) -> str:
    return run.data.tags.get(Tag.STATE, TrialState.RUNNING)


def _number(params: dict[str, str], name: str, default: float) -> float:
    """A numeric MLflow param (logged as JSON text)."""
    try:
        return float(json.loads(params.get(name, "null")) or default)
    except ValueError:
        return default


def _spend(budget: Budget, run) -> None:
    """Add one trial run to a budget: its outcome, steps, samples and time."""
    budget.trials += 1
    state = _state(run)
    budget.completed += state == TrialState.COMPLETED
    budget.pruned += state == TrialState.PRUNED
    budget.failed += state == TrialState.FAILED
    steps = int(run.data.tags.get(Tag.LAST_STEP, 0) or 0)
    budget.steps += steps
    budget.samples += steps * int(_number(run.data.params, "training.batch_size", 0))
    if run.info.end_time and run.info.start_time:
        wall = (run.info.end_time - run.info.start_time) / 1000
        workers = _number(run.data.params, "resources.workers", 1)
        gpus = _number(run.data.params, "resources.gpus_per_worker", 0)
        budget.wall_s += wall
        budget.device_s += wall * workers * (gpus or 1)


def _config(run) -> dict:
    """The sampled values of a trial, flat: the loss's parameters and the shared settings."""
    config = decode_config(json.loads(run.data.tags.get(Tag.TRIAL_CONFIG, "{}")))
    loss = config.get("loss")
    return dict(config.get(loss) or {}) | dict(config.get("shared") or {})


class _Judge:
    """Scores on the verdict metric, with per-item values where the metric has them."""

    def __init__(self, tracker: Tracker, metric: str | None) -> None:
        self.tracker, self.metric = tracker, metric
        self.test = ""

    def items(self, run) -> dict[str, float] | None:
        if self.metric is None:
            return None
        per_item = _artifact(self.tracker, run.info.run_id, PER_QUERY_ARTIFACT)  # None: STS, or a failed run
        return None if per_item is None else per_item.get(self.metric)

    def single(self, run) -> Interval | None:
        """One run's verdict score; its interval over queries where there are per-query values."""
        if self.metric is None or self.metric not in run.data.metrics:
            return None
        items = self.items(run)
        if items:
            return bootstrap_interval(np.array([list(items.values())]))
        value = run.data.metrics[self.metric]
        return Interval(value, value, value)


def _selection_rows(runs: list, metric: str) -> dict[str, Row]:
    """Per loss: what its search or tuning trials used, and its best completed one on the selection set."""
    losses: dict[str, Row] = {}
    for run in runs:
        loss = run.data.tags.get(Tag.LOSS, "?")
        row = losses.setdefault(loss, Row(loss))
        _spend(row.tuning, run)
        value = run.data.metrics.get(metric)
        if (
            _state(run) == TrialState.COMPLETED
            and value is not None
            and (row.selection is None or value > row.selection)
        ):
            row.selection, row.config, row.best_run_id = value, _config(run), run.info.run_id
    return losses


# --- Compare -----------------------------------------------------------------------------------------------


def _compare(board: Leaderboard, by_phase: dict[str, list], judge: _Judge, params: dict) -> None:
    expected_trials = int(_number(params, "sweep.trials", 0))
    expected_seeds = int(_number(params, "sweep.seeds", 0))
    losses = _selection_rows(by_phase[Phase.TUNE], board.metric)
    per_item: dict[str, dict[int, dict[str, float]]] = {}
    best_seed_run: dict[str, tuple[float, str]] = {}
    for run in by_phase[Phase.SEEDS]:
        loss = run.data.tags.get(Tag.LOSS, "?")
        row = losses.setdefault(loss, Row(loss))
        _spend(row.verdict, run)
        seed = int(run.data.tags.get(Tag.SEED, 0))
        value = run.data.metrics.get(board.verdict_metric or "")
        if _state(run) != TrialState.COMPLETED or value is None:
            row.missing_seeds.append(seed)
            continue
        row.seeds[seed] = value
        items = judge.items(run)
        if items:
            per_item.setdefault(loss, {})[seed] = items
        chosen_by = run.data.metrics.get(board.metric, -math.inf)  # the export pick: never the verdict score
        if loss not in best_seed_run or chosen_by > best_seed_run[loss][0]:
            best_seed_run[loss] = (chosen_by, run.info.run_id)
    rows = list(losses.values())
    for row in rows:
        row.best_run_id = best_seed_run.get(row.loss, (0, row.best_run_id))[1]
        row.missing_seeds = sorted(set(row.missing_seeds) - set(row.seeds))
        by_seed = per_item.get(row.loss, {})
        if by_seed and len(by_seed) == len(row.seeds):
            row.score = bootstrap_interval(_table(by_seed))
        elif row.seeds:
            mean, _, half = mean_ci(list(row.seeds.values()))
            half = 0.0 if math.isnan(half) else half
            row.score = Interval(mean, mean - half, mean + half)
    selected = max((r for r in rows if r.selection is not None), key=lambda r: r.selection, default=None)
    if selected is not None:
        selected.selected = True
    items_everywhere = all(len(per_item.get(r.loss, {})) == len(r.seeds) for r in rows if r.seeds)
    method = (
        f"two-level bootstrap over seeds and queries ({BOOTSTRAP_SAMPLES} resamples, widened for few seeds), "
        "paired by seed id and query"
        if items_everywhere and per_item
        else "paired t-test over seeds (paired by seed id)"
    )
    board.test = f"{method}; Holm-adjusted within each family (vs selected, vs untrained)"
    baseline_items = judge.items(_baseline_run(by_phase)) if board.baseline else None

    def difference(row: Row, reference: Row | None) -> Interval | None:
        if reference is None:  # the untrained model: one fixed score per query
            if board.baseline is None or board.baseline.score is None or not row.seeds:
                return None
            if items_everywhere and baseline_items and row.loss in per_item:
                table, _ = paired_table(per_item[row.loss], baseline_items)
                return bootstrap_interval(table)
            return paired_t(row.seeds, board.baseline.score.value)
        if not row.seeds or not reference.seeds:
            return None
        if items_everywhere and row.loss in per_item and reference.loss in per_item:
            table, seeds = paired_table(per_item[row.loss], per_item[reference.loss])
            return bootstrap_interval(table) if seeds else None
        return paired_t(row.seeds, reference.seeds)

    others = [r for r in rows if r is not selected]
    _adjust(others, "vs_selected", [difference(r, selected) for r in others])
    _adjust(rows, "vs_baseline", [difference(r, None) for r in rows])
    rows.sort(key=lambda r: (math.isnan(r.mean), -r.mean if not math.isnan(r.mean) else 0))
    board.rows = rows
    board.verdict = _compare_verdict(board, selected, expected_trials, expected_seeds)


def _table(by_seed: dict[int, dict[str, float]]) -> np.ndarray:
    seeds = sorted(by_seed)
    queries = sorted(set.intersection(*(set(by_seed[s]) for s in seeds)))
    return np.array([[by_seed[s][q] for q in queries] for s in seeds])


def _baseline_run(by_phase: dict[str, list]):
    return next(r for r in by_phase[Phase.BASELINE] if _state(r) == TrialState.COMPLETED)


def _adjust(rows: list[Row], field: str, intervals: list[Interval | None]) -> None:
    """Store each row's interval with its p-value Holm-adjusted across the family."""
    adjusted = holm([None if i is None else i.p for i in intervals])
    for row, interval, p in zip(rows, intervals, adjusted, strict=True):
        if interval is not None:
            interval = Interval(interval.value, interval.low, interval.high, p)
        setattr(row, field, interval)


def _significant(rows: list[Row], field: str) -> tuple[list[str], list[str]]:
    """The losses significantly above, and below, their reference in one family."""
    shown = [(row.loss, getattr(row, field)) for row in rows if getattr(row, field) is not None]
    above = [loss for loss, d in shown if d.shows_difference() and d.value > 0]
    below = [loss for loss, d in shown if d.shows_difference() and d.value < 0]
    return above, below


def _compare_verdict(board: Leaderboard, selected: Row | None, trials: int, seeds: int) -> str:
    if selected is None:
        return "No loss completed a tuning trial on the selection set; nothing was selected."
    metric, judged = board.metric, board.verdict_metric
    text = [
        f"Selected on {board.select_on} ({short(metric)}, the best completed of {trials} tuning trials per loss): "
        f"{selected.loss} ({selected.selection:.4f})."
    ]
    if selected.score is None:
        text.append(f"{selected.loss} has no finished seed run on the verdict set: no verdict.")
    else:
        set_name = judged.split("/")[1]
        text.append(
            f"Judged on {set_name} ({short(judged)}; scored only after selection; {len(selected.seeds)} seeds): "
            f"{selected.score.value:.4f} [{selected.score.low:.4f}, {selected.score.high:.4f}]."
        )
    if board.baseline is not None and board.baseline.score is not None:
        beat, worse = _significant(board.rows, "vs_baseline")
        base = f"the untrained model ({board.baseline.score.value:.4f})"
        if not beat:
            text.append(f"NO loss beats {base} on the verdict set: fine-tuning did not help here.")
        else:
            text.append(f"Beat {base}: {', '.join(beat)}.")
        if worse:
            text.append(f"Worse than {base}: {', '.join(worse)}.")
    ties = [r.loss for r in board.rows if r.vs_selected is not None and not r.vs_selected.shows_difference()]
    better, lower = _significant(board.rows, "vs_selected")
    if ties:
        text.append(
            f"The data cannot tell {selected.loss} apart from: {', '.join(ties)} (p >= {ALPHA} after Holm); "
            "choose among them on cost."
        )
    if better:
        text.append(f"Better than {selected.loss} on the verdict set (it was not selected on it): {', '.join(better)}.")
    if lower:
        text.append(f"Worse than {selected.loss}: {', '.join(lower)}.")
    short_of_budget = [
        f"{r.loss} ({r.tuning.trials - r.tuning.failed} of {trials} tuning trials ran, "
        f"{len(r.seeds)} of {seeds} seed runs finished"
        + (f"; missing seeds {', '.join(map(str, r.missing_seeds))}" if r.missing_seeds else "")
        + ")"
        for r in board.rows
        if r.tuning.trials - r.tuning.failed < trials or len(r.seeds) < seeds
    ]
    if short_of_budget:
        text.append("Received less than its budget: " + "; ".join(short_of_budget) + ".")
    else:
        text.append(f"Every loss received its full budget ({trials} tuning trials, {seeds} seed runs).")
    return " ".join(text)


# --- Search ------------------------------------------------------------------------------------------------


def _search(board: Leaderboard, by_phase: dict[str, list], judge: _Judge) -> None:
    losses = _selection_rows(by_phase[Phase.SEARCH], board.metric)
    rows = sorted(losses.values(), key=lambda r: -(r.selection if r.selection is not None else -math.inf))
    board.rows = rows
    winner = rows[0] if rows and rows[0].selection is not None else None
    if winner is None:
        board.verdict = "No trial completed; nothing was selected."
        return
    winner.selected = True
    scored = next((r for r in by_phase[Phase.VERDICT] if _state(r) == TrialState.COMPLETED), None)
    if scored is not None:
        winner.score = judge.single(scored)
        base_items = judge.items(_baseline_run(by_phase)) if board.baseline else None
        items = judge.items(scored)
        if items and base_items:
            winner.vs_baseline = bootstrap_interval(paired_table({0: items}, base_items)[0])
        board.test = (
            "bootstrap over queries of the winner's single run (seed variance not measured)"
            if items
            else f"none: {short(board.verdict_metric)} is one number for the whole set (no per-query values)"
        )
    text = [
        f"Selected on {board.select_on} ({short(board.metric)}): {winner.loss} with "
        f"{readable(winner.config) or 'its default parameters'} "
        f"({winner.selection:.4f}, best of {sum(r.tuning.trials for r in rows)} trials)."
    ]
    if winner.score is not None:
        set_name = board.verdict_metric.split("/")[1]
        score = winner.score
        interval = f" [{score.low:.4f}, {score.high:.4f}]" if score.high > score.low else " (no interval)"
        judged = f"Judged on {set_name} ({short(board.verdict_metric)}; never seen by the search)"
        text.append(f"{judged}: {score.value:.4f}{interval}.")
        if winner.vs_baseline is None and board.baseline and board.baseline.score:
            base = board.baseline.score.value
            text.append(
                f"The untrained model scores {base:.4f} there ({score.value - base:+.4f}); a metric without "
                "per-query values gives no interval, so this difference is not tested (mode: compare tests it)."
            )
        if winner.vs_baseline is not None and board.baseline and board.baseline.score:
            diff = winner.vs_baseline
            base = board.baseline.score.value
            if diff.shows_difference() and diff.value > 0:
                text.append(f"It beats the untrained model ({base:.4f}) by {diff}.")
            elif diff.shows_difference():
                text.append(f"It is WORSE than the untrained model ({base:.4f}): {diff}.")
            else:
                text.append(f"It cannot be told apart from the untrained model ({base:.4f}): {diff}.")
        text.append("One training run per configuration: seed noise is not in the interval (mode: compare has it).")
    elif board.verdict_metric is None:
        text.append("No verdict set: this score chose the winner, so it is optimistic.")
        if board.baseline is not None and board.baseline.selection is not None:
            text.append(f"The untrained model scores {board.baseline.selection:.4f} there.")
    failed = [r.loss for r in rows if r.tuning.failed]
    if failed:
        text.append(f"Failed trials (counted as failed, not as scores): {', '.join(failed)}.")
    board.verdict = " ".join(text)
