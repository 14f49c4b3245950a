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
from collections import defaultdict
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

from .evaluate import per_query_artifact
from .importance import importances, studies
from .leaderboard import Budget, Judged, Leaderboard, Row, readable, short
from .protocol import SEED_ROUNDS_ARTIFACT, Phase, Tag, TrialState
from .selection import choose, rank
from .space import TrialConfig
from .spec import MODEL_SEPARATOR, Params
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
        verdict_metrics=verdict_metrics,
        guard_metrics=json.loads(tags.get(Tag.GUARD_METRICS, "[]")),
    )
    by_phase: dict[str, list] = defaultdict(list)
    for run in runs:
        by_phase[run.data.tags.get(Tag.PHASE, "")].append(run)
    judge = Judge(tracker)
    for label, baseline in _baseline_runs(by_phase).items():
        row = Row(BASELINE + (f"{MODEL_SEPARATOR}{label}" if label else ""), model=label)
        row.selection = baseline.data.metrics.get(metric)
        row.score = judge.single(baseline, board.verdict_metric)
        for judged in board.verdict_metrics + board.guard_metrics:
            row.judged[judged] = Judged(score=judge.single(baseline, judged))
        board.baselines[label] = row
    board.baseline = next(iter(board.baselines.values()), None)
    planned = json.loads(tags.get(Tag.PLAN, "{}"))
    if board.verdict_metric is not None:
        board.detectable = {
            f"{family} (planned)": v for family, v in planned.get(_set(board.verdict_metric), {}).items()
        }
    if board.mode == "compare":
        _compare(board, by_phase, judge, params, _artifact(tracker, parent_run_id, SEED_ROUNDS_ARTIFACT))
    else:
        _search(board, by_phase, judge)
    board.studies = studies(runs, metric, _artifact(tracker, parent_run_id, "search_space.json") or {})
    board.importances = {loss: importances(study) for loss, study in board.studies.items()}
    return board


def _set(metric: str) -> str:
    """The eval set a metric name belongs to (`eval/<set>/...`)."""
    return metric.split("/")[1]


def _artifact(tracker: Tracker, run_id: str, path: str) -> Any:
    """A JSON artifact of a run, or None when it has none (an unreachable store raises)."""
    return tracker.read_dict(run_id, path)


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
    budget.samples += steps * int(_number(run.data.params, Params.BATCH_SIZE, 0))
    if run.info.end_time and run.info.start_time:
        wall = (run.info.end_time - run.info.start_time) / 1000
        workers = _number(run.data.params, Params.WORKERS, 1)
        gpus = _number(run.data.params, Params.GPUS_PER_WORKER, 0)
        budget.wall_s += wall
        budget.device_s += wall * workers * (gpus or 1)


def _config(run) -> dict:
    """The sampled values of a trial, flat: the loss's parameters, the shared settings, mining knobs."""
    return TrialConfig.of_run(run).flat()


def _flat(trial_config: dict) -> dict:
    return TrialConfig.of(trial_config).flat()


class Judge:
    """Scores of runs on the verdict and guard metrics, with per-item values where a metric has them
    (each run's artifacts read once), at the end or at an earlier step (budgets)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.cache: dict[tuple[str, int | None], dict | None] = {}
        self.histories: dict[tuple[str, str], dict[int, tuple[float, int]]] = {}

    def items(self, run, metric: str | None, step: int | None = None) -> dict[str, float] | None:
        if metric is None or run is None:
            return None
        key = (run.info.run_id, step)
        if key not in self.cache:  # None: STS, or a failed run
            self.cache[key] = _artifact(self.tracker, run.info.run_id, per_query_artifact(step))
        per_item = self.cache[key]
        return None if per_item is None else per_item.get(metric)

    def value(self, run, metric: str, step: int | None = None) -> float | None:
        """A run's final value of a metric, or its value at `step`."""
        if step is None:
            return run.data.metrics.get(metric)
        found = self.history(run, metric).get(step)
        return None if found is None else found[0]

    def seconds(self, run, metric: str, step: int) -> float | None:
        """Wall seconds from a run's start to its evaluation at `step` (that evaluation included)."""
        found = self.history(run, metric).get(step)
        return None if found is None else (found[1] - run.info.start_time) / 1000

    def history(self, run, metric: str) -> dict[int, tuple[float, int]]:
        key = (run.info.run_id, metric)
        if key not in self.histories:
            points = self.tracker.client.get_metric_history(run.info.run_id, metric)
            self.histories[key] = {m.step: (m.value, m.timestamp) for m in points}
        return self.histories[key]

    def single(self, run, metric: str | None) -> Interval | None:
        """One run's score; its interval over queries where there are per-query values."""
        if metric is None or metric not in run.data.metrics:
            return None
        items = self.items(run, metric)
        if items:
            return bootstrap_interval(np.array([list(items.values())]))
        value = run.data.metrics[metric]
        return Interval(value, value, value)


def _selection_rows(runs: list, metric: str) -> dict[str, Row]:
    """Per loss: what its search or tuning trials used, and its best completed one on the selection set."""
    losses: dict[str, Row] = {}
    for run in sorted(runs, key=lambda r: rank(r, metric) if metric in r.data.metrics else (math.inf,)):
        loss = run.data.tags.get(Tag.LOSS, "?")
        row = losses.setdefault(loss, Row(loss, model=run.data.tags.get(Tag.MODEL, "")))
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


def _compare(board: Leaderboard, by_phase: dict[str, list], judge: Judge, params: dict, rounds: dict | None) -> None:
    expected_trials = int(_number(params, Params.TRIALS, 0))
    expected_seeds = int(_number(params, Params.SEEDS, 0) or _number(params, Params.MOST_SEEDS, 0))
    losses = _selection_rows(by_phase[Phase.TUNE] + by_phase[Phase.RESCORE], board.metric)
    top = int(_number(params, Params.RESCORE_TOP, 0)) or None
    for loss, choice in choose(by_phase[Phase.TUNE] + by_phase[Phase.RESCORE], board.metric, top).items():
        row = losses[loss]
        row.selection, row.config, row.best_run_id = choice.score, _flat(choice.config), choice.run_id
        row.best_trial = choice.best_trial if choice.rescored else None
        board.rescored = board.rescored or choice.rescored
    best_seed_run: dict[str, tuple[float, str]] = {}
    seed_runs: dict[str, list] = defaultdict(list)
    for run in by_phase[Phase.SEEDS]:
        loss = run.data.tags.get(Tag.LOSS, "?")
        losses.setdefault(loss, Row(loss, model=run.data.tags.get(Tag.MODEL, "")))
        _spend(losses[loss].verdict, run)
        seed_runs[loss].append(run)
        if _state(run) == TrialState.COMPLETED:
            chosen_by = run.data.metrics.get(board.metric, -math.inf)  # the export pick: never the verdict score
            if loss not in best_seed_run or chosen_by > best_seed_run[loss][0]:
                best_seed_run[loss] = (chosen_by, run.info.run_id)
    rows = list(losses.values())
    selected = max((r for r in rows if r.selection is not None), key=lambda r: r.selection, default=None)
    if selected is not None:
        selected.selected = True
    baselines = _baseline_runs(by_phase)
    methods = []
    for metric in board.verdict_metrics + board.guard_metrics:
        guard = metric in board.guard_metrics  # one family over every guard set: adjusted below
        judged, method, per_item = judge_set(rows, seed_runs, selected, baselines, judge, metric, not guard)
        methods.append(method)
        for row in rows:
            row.judged[metric] = judged[row.loss]
        if metric == board.verdict_metric and per_item:
            models = {row.loss: row.model for row in rows}
            base_items = {loss: judge.items(baselines.get(models.get(loss, "")), metric) for loss in per_item}
            _realised(board, per_item, base_items)
    guards = [row.judged[m] for m in board.guard_metrics for row in rows]
    _adjust(guards, "vs_baseline", [g.vs_baseline for g in guards])
    _budgets(board, rows, seed_runs, selected, baselines, judge, params)
    for row in rows:
        row.best_run_id = best_seed_run.get(row.loss, (0, row.best_run_id))[1]
        primary = row.judged.get(board.verdict_metric or "", Judged())
        row.score, row.seeds = primary.score, primary.seeds
        row.vs_selected, row.vs_baseline = primary.vs_selected, primary.vs_baseline
        done = set(primary.seeds)
        row.missing_seeds = sorted({_seed(r) for r in seed_runs[row.loss]} - done)
    board.test = (methods[0] if methods else "none") + "; Holm-adjusted within each family (vs selected, vs untrained)"
    rows.sort(key=lambda r: (math.isnan(r.mean), -r.mean if not math.isnan(r.mean) else 0))
    board.rows = rows
    if rounds:  # adaptive seeds: the group-sequential rule decides, not a plain test at the end
        board.adaptive = (rounds["fewest"], rounds["most"])
        for row in rows:
            row.decisions = {
                f: states[row.loss]["state"] for f, states in rounds["states"].items() if row.loss in states
            }
            seeds = rounds["seeds"].get(row.loss, len(row.seeds))
            row.stopped = f"{seeds} of {rounds['most']}: " + "; ".join(f"{f}: {d}" for f, d in row.decisions.items())
    board.verdict = _compare_verdict(board, selected, expected_trials, expected_seeds)


def _seed(run) -> int:
    return int(run.data.tags.get(Tag.SEED, 0))


def judge_set(
    rows: list[Row],
    seed_runs: dict[str, list],
    selected: Row | None,
    baselines: dict[str, Any],
    judge: Judge,
    metric: str,
    adjust: bool = True,
    step: int | None = None,
) -> tuple[dict[str, Judged], str, dict[str, dict[int, dict[str, float]]]]:
    """Every loss on one verdict or guard set: its score over seeds (and queries), its difference to the
    selected loss and to the untrained model (its own base model's, from `baselines` by model label),
    each family Holm-adjusted; the test used; and the per-item values by loss and seed. `step`: as the
    seed runs stood at that step (a budget)."""
    judged = {row.loss: Judged() for row in rows}
    per_item: dict[str, dict[int, dict[str, float]]] = {}
    for loss, runs in seed_runs.items():
        for run in runs:
            value = judge.value(run, metric, step) if _state(run) == TrialState.COMPLETED else None
            if value is None:
                continue
            judged[loss].seeds[_seed(run)] = value
            items = judge.items(run, metric, step)
            if items:
                per_item.setdefault(loss, {})[_seed(run)] = items
    for loss, entry in judged.items():
        by_seed = per_item.get(loss, {})
        if by_seed and len(by_seed) == len(entry.seeds):
            entry.score = bootstrap_interval(_table(by_seed))
        elif entry.seeds:
            mean, _, half = mean_ci(list(entry.seeds.values()))
            half = 0.0 if math.isnan(half) else half
            entry.score = Interval(mean, mean - half, mean + half)
    items_everywhere = bool(per_item) and all(
        len(per_item.get(loss, {})) == len(entry.seeds) for loss, entry in judged.items() if entry.seeds
    )
    method = (
        f"two-level bootstrap over seeds and queries ({BOOTSTRAP_SAMPLES} resamples, widened for few seeds), "
        "paired by seed id and query"
        if items_everywhere
        else "paired t-test over seeds (paired by seed id)"
    )
    models = {row.loss: row.model for row in rows}

    def difference(loss: str, reference: str | None) -> Interval | None:
        entry = judged[loss]
        if not entry.seeds:
            return None
        if reference is None:  # the untrained model: one fixed score per query
            baseline_run = baselines.get(models.get(loss, ""))
            base_items = judge.items(baseline_run, metric)
            base_value = baseline_run.data.metrics.get(metric) if baseline_run is not None else None
            if items_everywhere and base_items and loss in per_item:
                return bootstrap_interval(paired_table(per_item[loss], base_items)[0])
            return paired_t(entry.seeds, base_value) if base_value is not None else None
        if not judged[reference].seeds:
            return None
        if items_everywhere and loss in per_item and reference in per_item:
            table, seeds = paired_table(per_item[loss], per_item[reference])
            return bootstrap_interval(table) if seeds else None
        return paired_t(entry.seeds, judged[reference].seeds)

    others = [r.loss for r in rows if r is not selected]
    versus = [difference(loss, selected.loss) for loss in others] if selected else [None] * len(others)
    _adjust([judged[loss] for loss in others], "vs_selected", versus, holm_adjust=adjust)
    _adjust([judged[r.loss] for r in rows], "vs_baseline", [difference(r.loss, None) for r in rows], adjust)
    return judged, method, per_item


def _budgets(board: Leaderboard, rows, seed_runs, selected, baselines, judge: Judge, params: dict) -> None:
    """The first verdict set judged at every budget of `sweep.budgets` (the seed runs as they stood at
    those steps; no decision read them), what each budget cost, and how the ranking moved."""
    metric, total = board.verdict_metric, int(_number(params, Params.STEPS, 0))
    fractions = json.loads(params.get(Params.BUDGETS, "null") or "null") or []
    steps = sorted({max(1, round(f * total)) for f in fractions} - {total})
    if metric is None or not steps:
        return
    workers = _number(params, Params.WORKERS, 1) * (_number(params, Params.GPUS_PER_WORKER, 0) or 1)
    for step in [*steps, total]:
        if step == total:
            judged = {row.loss: row.judged[metric] for row in rows}
        else:
            judged = judge_set(rows, seed_runs, selected, baselines, judge, metric, step=step)[0]
        board.budgets[step] = judged
        cost = {}
        for loss, runs in seed_runs.items():
            seconds = [judge.seconds(r, metric, step) for r in runs if _state(r) == TrialState.COMPLETED]
            seconds = [x for x in seconds if x is not None]
            if seconds:
                cost[loss] = workers * sum(seconds) / len(seconds)
        board.budget_cost[step] = cost
    ordered = sorted(board.budgets)
    for a, b in zip(ordered, ordered[1:], strict=False):
        common = [loss for loss in board.budgets[a] if board.budgets[a][loss].score and board.budgets[b][loss].score]
        if len(common) >= 2:
            tau = stats.kendalltau(
                [board.budgets[a][x].score.value for x in common], [board.budgets[b][x].score.value for x in common]
            )
            board.kendall.append((a, b, float(tau.statistic)))


def _realised(
    board: Leaderboard, per_item: dict[str, dict[int, dict[str, float]]], base_items: dict[str, dict | None]
) -> None:
    """The minimum detectable difference of the design as it ran (its seeds and queries), from the
    variance components of this sweep's own tables of the first verdict set (`base_items`: each loss's
    untrained model's per-item values)."""
    from .power import SimulatedPower, estimate

    losses = sorted(per_item)
    families = {
        "vs selected": (
            [paired_table(per_item[a], per_item[b])[0] for a, b in combinations(losses, 2)],
            len(losses) - 1,
        ),
        "vs untrained": (
            [paired_table(per_item[x], base_items[x])[0] for x in losses if base_items.get(x)],
            len(losses),
        ),
    }
    for family, (tables, comparisons) in families.items():
        tables = [t for t in tables if t.size]
        components = estimate(tables)
        if components is None or comparisons < 1:
            continue
        seeds, queries = max(t.shape[0] for t in tables), max(t.shape[1] for t in tables)
        design = SimulatedPower(components, seeds, queries, ALPHA / comparisons)
        board.detectable[f"{family} (realised)"] = design.detectable()


def _table(by_seed: dict[int, dict[str, float]]) -> np.ndarray:
    seeds = sorted(by_seed)
    queries = sorted(set.intersection(*(set(by_seed[s]) for s in seeds)))
    return np.array([[by_seed[s][q] for q in queries] for s in seeds])


def _baseline_runs(by_phase: dict[str, list]) -> dict[str, Any]:
    """The completed untrained-model runs by base model label ("" for a sweep of one model)."""
    found: dict[str, Any] = {}
    for run in by_phase[Phase.BASELINE]:
        if _state(run) == TrialState.COMPLETED:
            found.setdefault(run.data.tags.get(Tag.MODEL, ""), run)
    return found


def _adjust(rows: list, field: str, intervals: list[Interval | None], holm_adjust: bool = True) -> None:
    """Store each row's interval with its p-value Holm-adjusted across the family (or as it is)."""
    raw = [None if i is None else i.p for i in intervals]
    adjusted = holm(raw) if holm_adjust else raw
    for row, interval, p in zip(rows, intervals, adjusted, strict=True):
        if interval is not None:
            interval = Interval(interval.value, interval.low, interval.high, p)
        setattr(row, field, interval)


FAMILY_OF = {"vs_selected": "vs selected", "vs_baseline": "vs untrained"}


def _different(row: Row, field: str) -> bool:
    """Whether a loss differs from its reference in one family: by the adaptive rule when seeds were
    adaptive, else by its Holm-adjusted p-value."""
    interval = getattr(row, field)
    if interval is None:
        return False
    if row.decisions:
        return row.decisions.get(FAMILY_OF[field]) == "different"
    return interval.shows_difference()


def _significant(rows: list[Row], field: str) -> tuple[list[str], list[str]]:
    """The losses significantly above, and below, their reference in one family."""
    shown = [(row, getattr(row, field)) for row in rows if getattr(row, field) is not None]
    above = [row.loss for row, d in shown if _different(row, field) and d.value > 0]
    below = [row.loss for row, d in shown if _different(row, field) and d.value < 0]
    return above, below


def _compare_verdict(board: Leaderboard, selected: Row | None, trials: int, seeds: int) -> str:
    if selected is None:
        return "No loss completed a tuning trial on the selection set; nothing was selected."
    metric, judged = board.metric, board.verdict_metric
    how = (
        "the best mean of its top tuning trials re-trained with fresh seeds"
        if board.rescored
        else f"the best completed of {trials} tuning trials per loss"
    )
    text = [f"Selected on {board.select_on} ({short(metric)}, {how}): {selected.loss} ({selected.selection:.4f})."]
    if selected.score is None:
        text.append(f"{selected.loss} has no finished seed run on the verdict set: no verdict.")
    else:
        set_name = judged.split("/")[1]
        text.append(
            f"Judged on {set_name} ({short(judged)}; scored only after selection; {len(selected.seeds)} seeds): "
            f"{selected.score.value:.4f} [{selected.score.low:.4f}, {selected.score.high:.4f}]."
        )
    if len(board.baselines) > 1:
        text += _per_model_words(board)
    elif board.baseline is not None and board.baseline.score is not None:
        beat, worse = _significant(board.rows, "vs_baseline")
        base = f"the untrained model ({board.baseline.score.value:.4f})"
        if not beat:
            text.append(f"NO loss beats {base} on the verdict set: fine-tuning did not help here.")
        else:
            text.append(f"Beat {base}: {', '.join(beat)}.")
        if worse:
            text.append(f"Worse than {base}: {', '.join(worse)}.")
    ties = [r.loss for r in board.rows if r.vs_selected is not None and not _different(r, "vs_selected")]
    better, lower = _significant(board.rows, "vs_selected")
    if ties:
        text.append(
            f"The data cannot tell {selected.loss} apart from: {', '.join(ties)} (p >= {ALPHA} after Holm); "
            "choose among them on cost."
        )
    if ties and board.detectable:
        text.append(_undetectable(board, selected))
    if better:
        text.append(f"Better than {selected.loss} on the verdict set (it was not selected on it): {', '.join(better)}.")
    if lower:
        text.append(f"Worse than {selected.loss}: {', '.join(lower)}.")
    text += _other_sets(board)
    text += _budget_words(board)
    if board.adaptive:
        fewest, most = board.adaptive
        used = sum(len(r.seeds) for r in board.rows)
        text.append(
            f"Seeds were adaptive ({fewest} to {most} per loss; a group-sequential rule, O'Brien-Fleming "
            f"spending, Holm within each family): {used} seed runs of the {most * len(board.rows)} a fixed "
            f"{most} would take; " + "; ".join(f"{r.loss} {r.stopped}" for r in board.rows) + "."
        )
        seeds = fewest  # the budget every loss was promised; more came only where it decided something
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


def _per_model_words(board: Leaderboard) -> list[str]:
    """A sweep over several base models: for each, its best loss (selection), its untrained score, and
    which of its losses beat it; each (model, loss) is compared with its own model untrained."""
    text = []
    for label, base in board.baselines.items():
        rows = [row for row in board.rows if row.model == label]
        chosen = max((r for r in rows if r.selection is not None), key=lambda r: r.selection, default=None)
        line = (
            f"{label}: best loss on the selection set {chosen.loss.rsplit(MODEL_SEPARATOR, 1)[0]}"
            if chosen
            else f"{label}:"
        )
        if chosen is not None and chosen.score is not None:
            line += f" (verdict {chosen.score.value:.4f})"
        if base.score is not None:
            beat, worse = _significant(rows, "vs_baseline")
            line += f"; untrained {base.score.value:.4f}; beat it: {', '.join(beat) or 'none'}"
            line += f"; worse than it: {', '.join(worse)}" if worse else ""
        text.append(line + ".")
    return text


def _budget_words(board: Leaderboard) -> list[str]:
    """Whether the ranking at a small budget is the ranking at the full one."""
    leaders = board.leaders()
    if len(leaders) < 2:
        return []
    steps = sorted(leaders)
    taus = ", ".join(f"{a}->{b} steps {tau:+.2f}" for a, b, tau in board.kendall)
    who = ", ".join(f"{leaders[s]} at {s} steps" for s in steps)
    if len(set(leaders.values())) == 1:
        verdict = f"the leader does not change with the budget ({leaders[steps[-1]]} at every one)"
    else:
        verdict = f"the leader changes with the budget ({who})"
    budgets = ", ".join(map(str, steps))
    return [f"At budgets of {budgets} steps: {verdict}; Kendall's tau of consecutive rankings: {taus or 'n/a'}."]


def _undetectable(board: Leaderboard, selected: Row) -> str:
    """What the design could not have seen, in the verdict's own terms."""
    realised = board.detectable.get("vs selected (realised)")
    planned = board.detectable.get("vs selected (planned)")
    parts = []
    if realised is not None:
        parts.append(f"{realised:.4f} by this sweep's own seed runs")
    if planned is not None:
        parts.append(f"{planned:.4f} planned")
    figure = realised if realised is not None else planned
    return (
        f"Differences below {figure:.4f} were not detectable with this design ({len(selected.seeds)} seeds; "
        f"80% power, two-sided alpha {ALPHA} after Holm; {' and '.join(parts)}): more seeds or queries, not a "
        "verdict of equality, are what would tell them apart (`lossweep plan --effect`)."
    )


def _other_sets(board: Leaderboard) -> list[str]:
    """Every verdict set after the first, and every guard set, in words."""
    text = []
    selected = board.best
    for metric in board.verdict_metrics[1:]:
        scored = [(row, row.judged.get(metric)) for row in board.rows if row.judged.get(metric)]
        scored = [(row, j) for row, j in scored if j.score is not None]
        if not scored:
            continue
        best_row, best = max(scored, key=lambda item: item[1].score.value)
        line = f"Also judged on {_set(metric)} ({short(metric)}): best {best_row.loss} {best.score.value:.4f}"
        beat = [
            row.loss
            for row, j in scored
            if j.vs_baseline and j.vs_baseline.shows_difference() and j.vs_baseline.value > 0
        ]
        line += f"; beat the untrained model: {', '.join(beat) or 'none'}"
        if selected is not None and selected.judged.get(metric) and board.mode == "compare":
            ties = [row.loss for row, j in scored if j.vs_selected is not None and not j.vs_selected.shows_difference()]
            line += f"; not told apart from {selected.loss}: {', '.join(ties) or 'none'}"
        text.append(line + ".")
    for metric in board.guard_metrics:
        changes = [(row.loss, row.judged[metric].vs_baseline) for row in board.rows if row.judged.get(metric)]
        changes = [(loss, d) for loss, d in changes if d is not None]
        if not changes:
            continue
        worse = [f"{loss} ({d}, p {d.p:.3f})" for loss, d in changes if d.shows_difference() and d.value < 0]
        better = [loss for loss, d in changes if d.shows_difference() and d.value > 0]
        spread = f"changes from {min(d.value for _, d in changes):+.4f} to {max(d.value for _, d in changes):+.4f}"
        head = f"Guard {_set(metric)} ({short(metric)}; never used for a decision; Holm over every guard set)"
        if worse:
            text.append(f"{head}: REGRESSED by {'; '.join(worse)}.")
        else:
            text.append(f"{head}: no loss regresses it ({spread}).")
        if better:
            text.append(f"It improved with {', '.join(better)}.")
    return text


# --- Search ------------------------------------------------------------------------------------------------


def _search(board: Leaderboard, by_phase: dict[str, list], judge: Judge) -> None:
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
        baseline_run = _baseline_runs(by_phase).get(winner.model)
        for metric in board.verdict_metrics + board.guard_metrics:
            items, base_items = judge.items(scored, metric), judge.items(baseline_run, metric)
            entry = Judged(score=judge.single(scored, metric))
            if items and base_items:
                entry.vs_baseline = bootstrap_interval(paired_table({0: items}, base_items)[0])
            winner.judged[metric] = entry
        _adjust(
            [winner.judged[m] for m in board.guard_metrics],
            "vs_baseline",
            [winner.judged[m].vs_baseline for m in board.guard_metrics],
        )
        primary = winner.judged.get(board.verdict_metric or "", Judged())
        winner.score, winner.vs_baseline = primary.score, primary.vs_baseline
        board.test = (
            "bootstrap over queries of the winner's single run (seed variance not measured)"
            if judge.items(scored, board.verdict_metric)
            else f"none: {short(board.verdict_metric)} is one number for the whole set (no per-query values)"
        )
    text = [
        f"Selected on {board.select_on} ({short(board.metric)}): {winner.loss} with "
        f"{readable(winner.config) or 'its default parameters'} "
        f"({winner.selection:.4f}, best of {sum(r.tuning.trials for r in rows)} trials)."
    ]
    untrained = board.baselines.get(winner.model, board.baseline)  # the winner's own base model, untrained
    if winner.score is not None:
        set_name = board.verdict_metric.split("/")[1]
        score = winner.score
        interval = f" [{score.low:.4f}, {score.high:.4f}]" if score.high > score.low else " (no interval)"
        judged = f"Judged on {set_name} ({short(board.verdict_metric)}; never seen by the search)"
        text.append(f"{judged}: {score.value:.4f}{interval}.")
        if winner.vs_baseline is None and untrained and untrained.score:
            base = untrained.score.value
            text.append(
                f"The untrained model scores {base:.4f} there ({score.value - base:+.4f}); a metric without "
                "per-query values gives no interval, so this difference is not tested (mode: compare tests it)."
            )
        if winner.vs_baseline is not None and untrained and untrained.score:
            diff = winner.vs_baseline
            base = untrained.score.value
            if diff.shows_difference() and diff.value > 0:
                text.append(f"It beats the untrained model ({base:.4f}) by {diff}.")
            elif diff.shows_difference():
                text.append(f"It is WORSE than the untrained model ({base:.4f}): {diff}.")
            else:
                text.append(f"It cannot be told apart from the untrained model ({base:.4f}): {diff}.")
        text.append("One training run per configuration: seed noise is not in the interval (mode: compare has it).")
        text += _other_sets(board)
    elif board.verdict_metric is None:
        text.append("No verdict set: this score chose the winner, so it is optimistic.")
        if untrained is not None and untrained.selection is not None:
            text.append(f"The untrained model scores {untrained.selection:.4f} there.")
    failed = [r.loss for r in rows if r.tuning.failed]
    if failed:
        text.append(f"Failed trials (counted as failed, not as scores): {', '.join(failed)}.")
    board.verdict = " ".join(text)
