"""`lossweep plan`: before any training, what difference the verdict of a spec can detect, and what it
would take to detect a given one. `lossweep sweep` prints the same line before its first trial.

For each verdict set and each family of comparisons the spec implies (each loss against the selected
one, each loss against the untrained model), the plan needs the variance components of a comparison
(`power.py`):
- measured, when the tracking store holds seed runs of earlier sweeps on the same training data, model
  and verdict metric: their (seeds x queries) tables of differences between two losses, and between a
  loss and that sweep's untrained model, pooled;
- else assumed: a seed sd (`--seed-sd`, default `DEFAULT_SEED_SD`) and a per-query spread in proportion
  to the untrained model's own per-query spread on the set (the ratios below), which the plan
  measures by scoring the untrained model once (`untrained.py`).

The defaults come from lossweep's own seed runs of all-MiniLM-L6-v2 (README's results): Banking77 by
MAP@R, 4 batch-triplet losses x 3 seeds x 3,080 texts, and Cranfield by NDCG@10, 75 queries.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from itertools import combinations

import numpy as np

from . import untrained
from .evaluate import PER_QUERY_ARTIFACT
from .power import POWER, Components, SimulatedPower, estimate, queries_needed, seeds_needed
from .protocol import Phase, Tag, TrialState
from .spec import Params
from .stats import ALPHA, paired_table
from .tracking import Tracker

DEFAULT_SEED_SD = 0.005  # sd over seeds of one loss's mean score (Banking77 MAP@R: 0.004; Cranfield NDCG@10: 0.006)
QUERY_RATIO = 0.30  # per-query sd of a loss's difference to the untrained model / the untrained per-query sd
PAIR_QUERY_RATIO = 0.20  # the same for the difference of two losses
RESIDUAL_RATIO = 0.20  # seed x query sd of one loss / the untrained per-query sd (a pair: sqrt(2) times)
FAMILIES = ("vs selected", "vs untrained")
PER_QUERY_TYPES = ("retrieval", "triplet", "classes")  # sets scored per query; STS Spearman is one number


@dataclass
class FamilyPlan:
    """One family of comparisons on one verdict set: its size, what it can detect, what it would take."""

    family: str
    comparisons: int
    components: Components
    source: str
    detectable: dict[int, float] = field(default_factory=dict)  # seeds -> minimum detectable difference
    half_width: dict[int, float] = field(default_factory=dict)  # seeds -> the 95% interval's half-width
    seeds_needed: int | None = None  # for `effect`, at the set's queries
    queries_needed: int | None = None  # for `effect`, at the spec's (largest) seeds

    @property
    def alpha(self) -> float:
        return ALPHA / self.comparisons


@dataclass
class SetPlan:
    name: str
    metric: str
    queries: int  # items the verdict is judged on
    available: int  # items the data holds (more when the spec's `limit` cuts it)
    families: list[FamilyPlan] = field(default_factory=list)


@dataclass
class VerdictPlan:
    seeds: tuple[int, ...]  # the seed counts of the design (min and max for adaptive seeds)
    effect: float | None
    sets: list[SetPlan] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def detectable(self) -> dict[str, dict[str, float]]:
        """Per verdict set and family: the minimum detectable difference at the design's most seeds."""
        top = max(self.seeds)
        return {s.name: {f.family: f.detectable[top] for f in s.families} for s in self.sets}

    def lines(self) -> list[str]:
        """The plan in words, one line per verdict set (and per family with an --effect)."""
        out = []
        seeds = " to ".join(map(str, self.seeds))
        for plan in self.sets:
            parts = [
                f"{f.detectable[max(self.seeds)]:.4f} {f.family} ({f.comparisons} comparison"
                f"{'s' if f.comparisons != 1 else ''})"
                + (f", {f.detectable[min(self.seeds)]:.4f} at {min(self.seeds)} seeds" if len(self.seeds) > 1 else "")
                for f in plan.families
            ]
            sources = "; ".join(dict.fromkeys(f.source for f in plan.families))
            out.append(
                f"plan: {plan.name} ({plan.metric.split('/', 2)[-1]}, {plan.queries} queries x {seeds} seeds): "
                f"differences below {' and '.join(parts)} are found less than {POWER:.0%} of the time "
                f"(two-sided alpha {ALPHA} after Holm); variance from {sources}"
            )
            if self.effect is None:
                continue
            for f in plan.families:
                seeds_text = (
                    f"{f.seeds_needed} seeds at {plan.queries} queries"
                    if f.seeds_needed
                    else "no number of seeds (query noise hides it)"
                )
                more = (
                    f", or {f.queries_needed} queries at {max(self.seeds)} seeds"
                    if f.queries_needed and f.queries_needed > plan.queries
                    else ""
                )
                holds = f" ({plan.name} holds {plan.available})" if more else ""
                out.append(f"plan: to detect {self.effect:g} {f.family} on {plan.name}: {seeds_text}{more}{holds}")
        return out


def available_items(spec) -> dict[str, int]:
    """Per verdict set cut by `limit`: the queries (or rows) the data holds without the cut."""
    from .inputs import load_eval

    counts = {}
    for ref in spec.verdict_sets():
        if ref.limit is None:
            continue
        whole = load_eval(ref.replace(limit=None), spec)
        counts[ref.label] = len(whole.retrieval.queries) if whole.retrieval is not None else len(whole.rows)
    return counts


def families(spec, losses: int) -> dict[str, int]:
    """The comparisons a sweep's verdict makes, per family: a compare tests every loss but the selected
    one against it, and every loss against the untrained model; a search tests its winner against the
    untrained model."""
    if spec.sweep.mode == "compare":
        return {"vs selected": max(1, losses - 1), "vs untrained": losses}
    return {"vs untrained": 1}


def design_seeds(spec) -> tuple[int, ...]:
    """The seed runs a verdict rests on: a search judges one run; a compare its seeds (min and max)."""
    if spec.sweep.mode != "compare":
        return (1,)
    return tuple(sorted(set(spec.sweep.seed_counts())))


def measured_tables(tracker: Tracker, fingerprint: str, model: str, metric: str) -> tuple[dict[str, list], int]:
    """Difference tables from earlier sweeps' seed runs on this training data and model: per family,
    (seeds x queries) tables between two losses of one sweep and between a loss and that sweep's
    untrained model; and how many sweeps gave them."""
    experiments = [e.experiment_id for e in tracker.client.search_experiments()]
    found = tracker.client.search_runs(
        experiments,
        filter_string=f"tags.`{Tag.DATA_FINGERPRINT}` = '{fingerprint}' and params.`{Params.MODEL}` = '{model}'",
        max_results=5000,
    )
    by_sweep: dict[str, dict] = {}
    for run in found:
        tags = run.data.tags
        phase, parent = tags.get(Tag.PHASE), tags.get("mlflow.parentRunId")
        if phase not in (Phase.SEEDS, Phase.BASELINE) or tags.get(Tag.STATE) != TrialState.COMPLETED or not parent:
            continue
        items = _per_query(tracker, run.info.run_id, metric)
        if not items:
            continue
        sweep = by_sweep.setdefault(parent, {"losses": {}, "baseline": None})
        if phase == Phase.BASELINE:
            sweep["baseline"] = items
        else:
            sweep["losses"].setdefault(tags.get(Tag.LOSS, "?"), {})[int(tags.get(Tag.SEED, 0))] = items
    tables: dict[str, list] = {family: [] for family in FAMILIES}
    used = 0
    for sweep in by_sweep.values():
        before = sum(map(len, tables.values()))
        for a, b in combinations(sorted(sweep["losses"]), 2):
            table, _ = paired_table(sweep["losses"][a], sweep["losses"][b])
            if table.shape[0] >= 2:
                tables["vs selected"].append(table)
        for by_seed in sweep["losses"].values():
            if sweep["baseline"] is not None and len(by_seed) >= 2:
                tables["vs untrained"].append(paired_table(by_seed, sweep["baseline"])[0])
        used += sum(map(len, tables.values())) > before
    return tables, used


def _per_query(tracker: Tracker, run_id: str, metric: str) -> dict[str, float] | None:
    found = tracker.read_dict(run_id, PER_QUERY_ARTIFACT)
    return None if found is None else found.get(metric)


def assumed(family: str, spread: float, seed_sd: float) -> Components:
    """Components of a comparison from a seed sd and the untrained model's per-query spread."""
    if family == "vs untrained":
        return Components(seed_sd, QUERY_RATIO * spread, RESIDUAL_RATIO * spread)
    return Components(math.sqrt(2) * seed_sd, PAIR_QUERY_RATIO * spread, math.sqrt(2) * RESIDUAL_RATIO * spread)


def make_plan(
    spec,
    losses: int,
    tracker: Tracker | None,
    fingerprint: str,
    seed_sd: float | None = None,
    effect: float | None = None,
    available: dict[str, int] | None = None,
) -> VerdictPlan:
    """The plan of a sweep spec with `losses` candidates, its verdict sets scored untrained (cached)."""
    from .tuning import verdict_metric  # Tune's module: only once a plan is made

    plan = VerdictPlan(design_seeds(spec), effect)
    verdict = [ref for ref in spec.verdict_sets() if ref.type in PER_QUERY_TYPES]
    if not verdict:
        return plan
    scored = untrained.scores(spec, [ref.label for ref in verdict])
    for ref in verdict:
        metric = verdict_metric(spec, ref)
        items = scored[ref.label]["per_query"].get(metric)
        if not items:
            continue  # a metric without per-query values (STS Spearman): no two-level plan
        values = np.array(list(items.values()))
        queries = len(values)
        set_plan = SetPlan(ref.label, metric, queries, (available or {}).get(ref.label, queries))
        measured, sweeps = measured_tables(tracker, fingerprint, spec.model, metric) if tracker is not None else ({}, 0)
        for family, comparisons in families(spec, losses).items():
            components = estimate(measured.get(family, [])) if seed_sd is None else None
            if components is not None:
                source = f"{sweeps} earlier sweep{'s' if sweeps != 1 else ''} on this data and model"
            else:
                sd = DEFAULT_SEED_SD if seed_sd is None else seed_sd
                components = assumed(family, float(values.std(ddof=1)), sd)
                given = "--seed-sd" if seed_sd is not None else "the default"
                source = f"a seed sd of {sd:g} ({given}) and the untrained per-query spread"
            family_plan = FamilyPlan(family, comparisons, components, source)
            for seeds in plan.seeds:
                design = SimulatedPower(components, seeds, queries, family_plan.alpha, seed=seeds)
                family_plan.detectable[seeds] = design.detectable()
                family_plan.half_width[seeds] = design.half_width()
            if effect is not None:
                family_plan.seeds_needed = seeds_needed(effect, components, queries, family_plan.alpha)
                most = max(queries, set_plan.available)
                family_plan.queries_needed = queries_needed(
                    effect, components, max(plan.seeds), family_plan.alpha, most=most
                )
            set_plan.families.append(family_plan)
        plan.sets.append(set_plan)
    return plan
