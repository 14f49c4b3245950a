"""The verdict of a sweep, computed from its MLflow child runs alone (so `lossweep report` can redo it).

compare mode: per loss, the k seed re-trainings of its best configuration give mean, standard
deviation and a 95% t-interval. Each loss is tested against the best with a paired test: a bootstrap
over queries of the per-query NDCG@10 difference (seed-averaged) when the metric is retrieval NDCG@10,
else a paired t-test over seeds (the same seeds for every loss). The verdict says which losses the
data cannot tell apart from the best.

search mode: per loss, its trials (completed, pruned, failed) and its best completed score.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

ALPHA = 0.05
BOOTSTRAP_SAMPLES = 10_000


@dataclass
class Row:
    loss: str
    n: int
    mean: float
    std: float
    ci95: float
    best_run_id: str | None = None
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    p_value: float | None = None
    diff_ci: tuple[float, float] | None = None
    distinguishable: bool | None = None
    config: dict = field(default_factory=dict)


@dataclass
class Leaderboard:
    mode: str
    metric: str
    rows: list[Row]
    test: str = ""
    verdict: str = ""
    runs: list = field(default_factory=list, repr=False)

    @property
    def best(self) -> Row | None:
        return self.rows[0] if self.rows and not math.isnan(self.rows[0].mean) else None

    def columns(self) -> list[str]:
        if self.mode == "compare":
            return [
                "rank",
                "loss",
                "n_seeds",
                "mean",
                "std",
                "ci95",
                "diff_vs_best_ci95",
                "p_vs_best",
                "distinguishable",
            ]
        return ["rank", "loss", "best", "completed", "pruned", "failed", "best_config"]

    def records(self) -> list[list]:
        out = []
        for rank, r in enumerate(self.rows, start=1):
            if self.mode == "compare":
                diff = "" if r.diff_ci is None else f"[{r.diff_ci[0]:+.4f}, {r.diff_ci[1]:+.4f}]"
                p = "" if r.p_value is None else f"{r.p_value:.4f}"
                dist = "" if r.distinguishable is None else ("yes" if r.distinguishable else "no")
                out.append([rank, r.loss, r.n, _f(r.mean), _f(r.std), _f(r.ci95), diff, p, dist])
            else:
                out.append(
                    [rank, r.loss, _f(r.mean), r.completed, r.pruned, r.failed, json.dumps(r.config, sort_keys=True)]
                )
        return out

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.columns())
        writer.writerows(self.records())
        return buffer.getvalue()

    def to_markdown(self) -> str:
        lines = [f"# Leaderboard ({self.mode}, {self.metric})", ""]
        lines.append("| " + " | ".join(self.columns()) + " |")
        lines.append("|" + "---|" * len(self.columns()))
        lines += ["| " + " | ".join(str(v) for v in record) + " |" for record in self.records()]
        lines += ["", f"Test: {self.test}" if self.test else "", "", self.verdict]
        return "\n".join(lines).strip() + "\n"

    def log(self, tracker, parent_run_id: str) -> None:
        """Leaderboard (CSV, Markdown), plots and the best result onto the sweep's parent run."""
        from .plots import sweep_figures

        tracker.client.log_text(parent_run_id, self.to_csv(), "leaderboard.csv")
        tracker.client.log_text(parent_run_id, self.to_markdown(), "leaderboard.md")
        for name, figure in sweep_figures(self).items():
            tracker.client.log_figure(parent_run_id, figure, name)
        if self.best is not None:
            tracker.set_tags(
                parent_run_id,
                {"lossweep.best_loss": self.best.loss, "lossweep.best_run_id": self.best.best_run_id or ""},
            )
            tracker.log_metrics(parent_run_id, {f"best/{self.metric}": self.best.mean}, step=0)


def _f(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def sweep_runs(tracker, parent_run_id: str) -> list:
    return tracker.children(parent_run_id)


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation and the half-width of the 95% t-interval."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(values))
    if n == 1:
        return mean, math.nan, math.nan
    std = float(np.std(values, ddof=1))
    return mean, std, float(stats.t.ppf(1 - ALPHA / 2, n - 1) * std / math.sqrt(n))


def paired_bootstrap(
    best: dict[str, float], other: dict[str, float], seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Two-sided bootstrap p-value and 95% interval of mean(best - other) over shared queries."""
    queries = sorted(set(best) & set(other))
    diffs = np.array([best[q] - other[q] for q in queries])
    rng = np.random.default_rng(seed)
    samples = rng.choice(diffs, size=(BOOTSTRAP_SAMPLES, len(diffs)), replace=True).mean(axis=1)
    low, high = np.percentile(samples, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    p = 2 * min((samples <= 0).mean(), (samples >= 0).mean())
    return float(min(1.0, p)), (float(low), float(high))


def paired_t(best: list[float], other: list[float]) -> tuple[float, tuple[float, float]]:
    """Paired t-test over seeds: p-value and 95% interval of the mean difference."""
    diffs = np.array(best) - np.array(other)
    if len(diffs) < 2 or np.allclose(diffs, diffs[0]):
        return (1.0 if np.allclose(diffs, 0) else 0.0), (float(diffs.mean()), float(diffs.mean()))
    p = float(stats.ttest_rel(best, other).pvalue)
    half = stats.t.ppf(1 - ALPHA / 2, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
    return p, (float(diffs.mean() - half), float(diffs.mean() + half))


def _per_query(tracker, run_id: str, dataset: str) -> dict[str, float] | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracker.client.download_artifacts(run_id, "per_query_ndcg_at_10.json", tmp)
        except Exception:  # no artifact: not a retrieval metric, or the run failed before the end
            return None
        return json.loads(Path(path).read_text()).get(dataset)


def build_leaderboard(runs: list, metric: str, mode: str, tracker=None) -> Leaderboard:
    """The leaderboard of a sweep from its child runs (tags and final metrics)."""
    by_loss: dict[str, list] = defaultdict(list)
    for run in runs:
        by_loss[run.data.tags.get("lossweep.loss", "?")].append(run)
    if mode == "compare":
        return _compare(by_loss, metric, tracker, runs)
    rows = []
    for loss, group in by_loss.items():
        states = [r.data.tags.get("lossweep.trial_state", "running") for r in group]
        completed = [r for r, s in zip(group, states, strict=True) if s == "completed" and metric in r.data.metrics]
        best = max(completed, key=lambda r: r.data.metrics[metric], default=None)
        config = json.loads(best.data.tags.get("lossweep.trial_config", "{}")) if best else {}
        rows.append(
            Row(
                loss,
                len(completed),
                best.data.metrics[metric] if best else math.nan,
                math.nan,
                math.nan,
                best.info.run_id if best else None,
                states.count("completed"),
                states.count("pruned"),
                states.count("failed"),
                config=config,
            )
        )
    rows.sort(key=lambda r: (math.isnan(r.mean), -r.mean if not math.isnan(r.mean) else 0))
    board = Leaderboard(mode, metric, rows, runs=runs)
    if board.best:
        board.verdict = (
            f"Best configuration: {board.best.loss} with {metric} = {board.best.mean:.4f} (single run per trial)."
        )
    failed = [r.loss for r in rows if r.failed]
    if failed:
        board.verdict += f" Failed trials (counted as failed, not as scores): {', '.join(failed)}."
    return board


def _compare(by_loss: dict[str, list], metric: str, tracker, runs: list) -> Leaderboard:
    rows, per_query, seeds = [], {}, {}
    dataset = metric.split("/")[1] if metric.startswith("eval/") else ""
    use_bootstrap = tracker is not None and metric.endswith("/ndcg_at_10")
    for loss, group in by_loss.items():
        seed_runs = [r for r in group if r.data.tags.get("lossweep.phase") == "seeds"]
        done = [
            r for r in seed_runs if r.data.tags.get("lossweep.trial_state") == "completed" and metric in r.data.metrics
        ]
        failed = sum(r.data.tags.get("lossweep.trial_state") == "failed" for r in group)
        done.sort(key=lambda r: int(r.data.tags.get("lossweep.seed", 0)))
        values = [r.data.metrics[metric] for r in done]
        mean, std, ci = mean_ci(values)
        best_run = max(done, key=lambda r: r.data.metrics[metric], default=None)
        config = json.loads(done[0].data.tags.get("lossweep.trial_config", "{}")) if done else {}
        rows.append(
            Row(
                loss,
                len(values),
                mean,
                std,
                ci,
                best_run.info.run_id if best_run else None,
                len(done),
                0,
                failed,
                config=config,
            )
        )
        seeds[loss] = values
        if use_bootstrap and done:
            tables = [t for t in (_per_query(tracker, r.info.run_id, dataset) for r in done) if t]
            if len(tables) == len(done):
                per_query[loss] = {q: float(np.mean([t[q] for t in tables])) for q in tables[0]}
    rows.sort(key=lambda r: (math.isnan(r.mean), -r.mean if not math.isnan(r.mean) else 0))
    board = Leaderboard("compare", metric, rows, runs=runs)
    if not board.best:
        board.verdict = "No loss finished its seed runs; nothing to compare."
        return board
    best = board.best
    bootstrap = use_bootstrap and all(r.loss in per_query for r in rows if r.n)
    board.test = (
        f"paired bootstrap over queries of seed-averaged per-query NDCG@10 ({BOOTSTRAP_SAMPLES} resamples), vs the best"
        if bootstrap
        else "paired t-test over seeds (same seeds for every loss), vs the best"
    )
    for row in rows[1:]:
        if not row.n:
            continue
        if bootstrap:
            row.p_value, row.diff_ci = paired_bootstrap(per_query[best.loss], per_query[row.loss])
        else:
            row.p_value, row.diff_ci = paired_t(seeds[best.loss], seeds[row.loss])
        row.distinguishable = row.p_value < ALPHA
    ties = [r.loss for r in rows[1:] if r.distinguishable is False]
    worse = [r.loss for r in rows[1:] if r.distinguishable]
    text = f"Best: {best.loss}, {metric} = {best.mean:.4f} +/- {best.ci95:.4f} (mean +/- 95% CI over {best.n} seeds)."
    if ties:
        text += (
            f" NOT distinguishable from the best at the 95% level: {', '.join(ties)}; the data cannot rank these "
            f"{len(ties) + 1} losses, choose among them on cost."
        )
    if worse:
        text += f" Significantly worse than the best (p < {ALPHA}): {', '.join(worse)}."
    failed = [r.loss for r in rows if r.failed]
    if failed:
        text += f" Failed trials (reported as failed, not as scores): {', '.join(failed)}."
    board.verdict = text
    return board
