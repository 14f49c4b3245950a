"""The leaderboard of a sweep: one row per loss (and one for the untrained model), the verdict in
words, and its forms on disk (CSV, Markdown), in the terminal and on the MLflow parent run.

`verdict.py` fills it from the sweep's MLflow runs; this module only holds and shows it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

from .protocol import Tag
from .stats import Interval


@dataclass
class Budget:
    """What a loss used: trials by outcome, optimisation steps, training samples, time."""

    trials: int = 0
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    steps: int = 0
    samples: int = 0
    wall_s: float = 0.0
    device_s: float = 0.0  # worker-seconds on CPU, GPU-seconds on GPU

    def outcomes(self) -> str:
        return f"{self.completed}/{self.pruned}/{self.failed}"


@dataclass
class Judged:
    """One loss on one verdict or guard set: its score, per seed, and its differences to the selected
    loss and to the untrained model (p-values Holm-adjusted within the set's family)."""

    score: Interval | None = None
    seeds: dict[int, float] = field(default_factory=dict)
    vs_selected: Interval | None = None
    vs_baseline: Interval | None = None


@dataclass
class Row:
    """One loss: how it was chosen (selection set), how it did (verdict set), what it cost."""

    loss: str
    model: str = ""  # the label of its base model in a sweep over several (`sweep.models`), else ""
    config: dict[str, Any] = field(default_factory=dict)  # the chosen configuration's sampled values
    selection: float | None = None  # its best completed score on the selection set
    score: Interval | None = None  # on the verdict set (compare: over seeds and queries)
    seeds: dict[int, float] = field(default_factory=dict)  # verdict score by seed id
    missing_seeds: list[int] = field(default_factory=list)  # seed runs that failed or never finished
    vs_selected: Interval | None = None  # p-values Holm-adjusted within their family
    vs_baseline: Interval | None = None
    tuning: Budget = field(default_factory=Budget)
    verdict: Budget = field(default_factory=Budget)  # the seed runs of a compare
    best_run_id: str | None = None
    selected: bool = False
    judged: dict[str, Judged] = field(default_factory=dict)  # every verdict and guard set, by metric
    best_trial: float | None = None  # rescored: its best single tuning trial's score (what it would show)
    decisions: dict[str, str] = field(default_factory=dict)  # adaptive seeds: family -> the rule's state
    stopped: str = ""  # adaptive seeds: why its seed runs stopped where they did

    @property
    def mean(self) -> float:
        """The number the row is ranked by: its verdict score, else its selection score."""
        if self.score is not None:
            return self.score.value
        return math.nan if self.selection is None else self.selection


@dataclass
class Leaderboard:
    mode: str
    metric: str  # the selection metric
    select_on: str
    verdict_metric: str | None  # None: no verdict set
    rows: list[Row]
    baseline: Row | None = None  # the untrained model (the first base model's, in a sweep over several)
    baselines: dict[str, Row] = field(default_factory=dict)  # every base model's untrained row, by label
    test: str = ""
    verdict: str = ""
    runs: list = field(default_factory=list, repr=False)
    importances: dict[str, dict[str, float]] = field(default_factory=dict)  # loss -> param -> fANOVA share
    studies: dict = field(default_factory=dict, repr=False)  # loss -> the Optuna study rebuilt from its trials
    verdict_metrics: list[str] = field(default_factory=list)  # every verdict set's metric, the first above
    guard_metrics: list[str] = field(default_factory=list)
    detectable: dict[str, float] = field(default_factory=dict)  # family -> planned / realised, first set
    adaptive: tuple[int, int] | None = None  # (min, max) seeds when they were adaptive
    rescored: bool = False  # selection scores are means over rescore runs
    budgets: dict[int, dict[str, Judged]] = field(default_factory=dict)  # step -> loss -> the first verdict set
    budget_cost: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> loss -> worker-s per seed run
    kendall: list[tuple[int, int, float]] = field(default_factory=list)  # consecutive budgets' rank agreement

    @property
    def best(self) -> Row | None:
        """The row lossweep recommends: the loss selected on the selection set."""
        return next((row for row in self.rows if row.selected), None)

    def table(self, part: str = "all") -> tuple[list[str], list[list[str]]]:
        """Columns and rows of the leaderboard: `verdict` (scores and tests), `budget` (what each loss
        used, and its configuration) or `all` (both, as in the CSV and Markdown files)."""
        judged = f"verdict {short(self.verdict_metric)}" if self.verdict_metric else None
        compare = self.mode == "compare"
        verdict = [f"selection {short(self.metric)}"] + (["best single trial"] if self.rescored else [])
        if compare:
            verdict += [f"{judged} [95% CI]", "vs selected [95% CI]", "p (Holm)", "vs untrained [95% CI]", "p (Holm)"]
            verdict += ["seeds"]
        elif judged:
            verdict += [f"{judged} [95% CI]", "vs untrained [95% CI]", "p"]
        for metric in self.verdict_metrics[1:]:
            verdict += [f"{metric.split('/', 1)[1]} [95% CI]"]
        for metric in self.guard_metrics:
            verdict += [f"guard {metric.split('/', 1)[1]}: vs untrained [95% CI]", "p (Holm)"]
        budget = ["trials done/pruned/failed", "trial-steps", "samples", "wall", "worker-s", "configuration"]
        budget += ["seeds: why they stopped"] if self.adaptive else []
        columns = ["rank", "loss"] + (verdict if part != "budget" else []) + (budget if part != "verdict" else [])
        records = []
        untrained = list(self.baselines.values()) or ([self.baseline] if self.baseline else [])
        rows = list(self.rows) + untrained
        for rank, row in enumerate(rows, start=1):
            is_base = any(row is base for base in untrained)
            scores = [_f(row.selection)] + ([_f(row.best_trial)] if self.rescored else [])
            if compare:
                seeds = "" if is_base else f"{len(row.seeds)}/{len(row.seeds) + len(row.missing_seeds)}"
                scores += [_interval(row.score), _difference(row.vs_selected), _p(row.vs_selected)]
                scores += [_difference(row.vs_baseline), _p(row.vs_baseline), seeds]
            elif judged:
                scores += [_interval(row.score), _difference(row.vs_baseline), _p(row.vs_baseline)]
            for metric in self.verdict_metrics[1:]:
                scores += [_interval(row.judged[metric].score) if metric in row.judged else ""]
            for metric in self.guard_metrics:
                change = row.judged[metric].vs_baseline if metric in row.judged else None
                scores += [_difference(change), _p(change)]
            spent = (["", "", "", "", ""] if is_base else _budget(row, compare)) + [readable(row.config)]
            spent += [row.stopped] if self.adaptive else []
            record = ["-" if is_base else str(rank), row.loss + (" (selected)" if row.selected else "")]
            records.append(record + (scores if part != "budget" else []) + (spent if part != "verdict" else []))
        return columns, records

    def budget_table(self) -> tuple[list[str], list[list[str]]]:
        """The first verdict set at every budget: each loss's score with its interval and what a seed
        run had cost by then (worker-seconds)."""
        steps = sorted(self.budgets)
        columns = ["loss"] + [f"step {s}: {short(self.verdict_metric)} [95% CI]" for s in steps]
        columns += [f"worker-s by step {s}" for s in steps]
        records = []
        for row in self.rows:
            scores = [_interval(self.budgets[s][row.loss].score) if row.loss in self.budgets[s] else "" for s in steps]
            costs = [
                f"{self.budget_cost[s][row.loss]:.0f}" if row.loss in self.budget_cost.get(s, {}) else "" for s in steps
            ]
            records.append([row.loss, *scores, *costs])
        return columns, records

    def leaders(self) -> dict[int, str]:
        """The loss with the best verdict score at each budget."""
        out = {}
        for step, judged in sorted(self.budgets.items()):
            scored = {loss: j.score.value for loss, j in judged.items() if j.score is not None}
            if scored:
                out[step] = max(scored, key=scored.get)
        return out

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        columns, records = self.table()
        writer.writerow(columns)
        writer.writerows(records)
        return buffer.getvalue()

    def importance_lines(self) -> list[str]:
        """'loss: param 0.62, param 0.30, ...' per loss, most important first."""
        lines = []
        for loss, shares in self.importances.items():
            ranked = sorted(shares.items(), key=lambda item: -item[1])
            lines.append(f"{loss}: " + (", ".join(f"{p} {v:.2f}" for p, v in ranked) or "too few distinct trials"))
        return lines

    def to_markdown(self) -> str:
        lines = [f"# Leaderboard ({self.mode}: selected on {self.select_on}, {self.metric})", ""]
        columns, records = self.table()
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        lines += ["| " + " | ".join(record) + " |" for record in records]
        if self.budgets:
            columns, records = self.budget_table()
            lines += ["", "Verdict at each budget:", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(record) + " |" for record in records]
        lines += ["", f"Test: {self.test}" if self.test else "", "", self.verdict]
        if self.importances:
            lines += ["", "What mattered (fANOVA share of the selection metric's variance, per loss):", ""]
            lines += [f"- {line}" for line in self.importance_lines()]
        return "\n".join(lines).strip() + "\n"

    def log(self, tracker, parent_run_id: str) -> None:
        """Leaderboard (CSV, Markdown), plots and the recommended result onto the sweep's parent run."""
        from .plots import sweep_figures

        tracker.client.log_text(parent_run_id, self.to_csv(), "leaderboard.csv")
        tracker.client.log_text(parent_run_id, self.to_markdown(), "leaderboard.md")
        for name, figure in sweep_figures(self).items():
            tracker.client.log_figure(parent_run_id, figure, name)
        if self.importances:
            tracker.log_dict(parent_run_id, self.importances, "importance.json")
        best = self.best
        if best is not None:
            tracker.set_tags(
                parent_run_id,
                {Tag.BEST_LOSS: best.loss, Tag.BEST_RUN_ID: best.best_run_id or ""},
            )
            metrics = {} if best.selection is None else {f"best/{self.metric}": best.selection}
            if best.score is not None and self.verdict_metric:
                metrics[f"verdict/{self.verdict_metric}"] = best.score.value
            if metrics:
                tracker.log_metrics(parent_run_id, metrics, step=0)


def short(metric: str | None) -> str:
    """`eval/<set>/<metric>` without the prefix: the column headers name the set elsewhere."""
    return "" if metric is None else metric.split("/", 2)[-1]


def readable(config: dict[str, Any]) -> str:
    """A trial configuration as `name=value` pairs, numbers to 3 significant digits."""

    def value(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(value(x) for x in v) + "]"
        return str(v)

    return ", ".join(f"{k}={value(v)}" for k, v in config.items())


def _f(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def _interval(interval: Interval | None) -> str:
    if interval is None:
        return ""
    if interval.low == interval.high:
        return f"{interval.value:.4f}"
    return f"{interval.value:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def _difference(interval: Interval | None) -> str:
    return "" if interval is None else str(interval)


def _p(interval: Interval | None) -> str:
    if interval is None or interval.p is None:
        return ""
    return "n/a" if math.isnan(interval.p) else f"{interval.p:.3f}"


def _budget(row: Row, both: bool) -> list[str]:
    """The budget cells: tuning alone, or `tuning + seeds` for a compare."""

    def cells(budget: Budget) -> list[str]:
        minutes, seconds = divmod(round(budget.wall_s), 60)
        return [budget.outcomes(), str(budget.steps), str(budget.samples), f"{minutes}m{seconds:02d}s"]

    if not both:
        return cells(row.tuning) + [f"{row.tuning.device_s:.0f}"]
    pairs = zip(cells(row.tuning), cells(row.verdict), strict=True)
    return [f"{a} + {b}" for a, b in pairs] + [f"{row.tuning.device_s:.0f} + {row.verdict.device_s:.0f}"]
