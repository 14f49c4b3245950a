"""Adaptive seeds on the driver: after each round of seed runs, which comparisons are decided by the
group-sequential rule (`sequential.py`), and so which losses get another seed.

The decisions are replayed from the sweep's MLflow runs, look by look (seed ids are given in order,
so the n-th seed run of a loss is seed `first + n - 1`): a resumed sweep, or `lossweep report`,
reaches the same decisions as the driver that made them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

from .leaderboard import Row
from .protocol import SEED_ROUNDS_ARTIFACT, Phase, Tag, TrialState  # noqa: F401 (the artifact's name)
from .sequential import Comparison, decide
from .verdict import Judge, judge_set

FAMILIES = ("vs selected", "vs untrained")


@dataclass
class Rounds:
    """The states of every comparison at the latest look, and the seed runs each loss has."""

    fewest: int
    most: int
    selected: str | None
    seeds: dict[str, int] = field(default_factory=dict)
    states: dict[str, dict[str, Comparison]] = field(default_factory=dict)  # family -> loss -> comparison

    def needs_seed(self) -> list[str]:
        """The losses with a comparison still undecided (the selected loss too, while any comparison
        with it is), below `most` seeds."""
        wanted = set()
        for family, comparisons in self.states.items():
            for loss, comparison in comparisons.items():
                if comparison.state == "undecided":
                    wanted.add(loss)
                    if family == "vs selected" and self.selected is not None:
                        wanted.add(self.selected)
        return sorted(loss for loss in wanted if self.seeds.get(loss, 0) < self.most)

    def why(self, loss: str) -> str:
        """Why a loss stopped where it did, in words."""
        parts = [
            f"{family}: {self.states[family][loss].state}" for family in FAMILIES if loss in self.states.get(family, {})
        ]
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {
            "fewest": self.fewest,
            "most": self.most,
            "selected": self.selected,
            "seeds": self.seeds,
            "states": {f: {loss: asdict(c) for loss, c in cs.items()} for f, cs in self.states.items()},
        }


def replay(
    tracker, parent_run_id: str, selection_metric: str, metric: str, fewest: int, most: int, first_seed: int
) -> Rounds:
    """The rule's decisions on `metric` (the first verdict set's) at every look so far, from the runs of
    the sweep; the selected loss is the one with the best completed tuning trial on `selection_metric`."""
    runs = tracker.children(parent_run_id)
    seed_runs: dict[str, list] = defaultdict(list)
    selection: dict[str, float] = {}
    baselines: dict[str, object] = {}  # by base model label
    models: dict[str, str] = {}
    for run in runs:
        tags, state = run.data.tags, run.data.tags.get(Tag.STATE)
        if tags.get(Tag.PHASE) == Phase.SEEDS:
            seed_runs[tags.get(Tag.LOSS, "?")].append(run)
            models[tags.get(Tag.LOSS, "?")] = tags.get(Tag.MODEL, "")
        elif tags.get(Tag.PHASE) == Phase.TUNE and state == TrialState.COMPLETED:
            value = run.data.metrics.get(selection_metric)
            if value is not None:
                loss = tags.get(Tag.LOSS, "?")
                selection[loss] = max(value, selection.get(loss, value))
        elif tags.get(Tag.PHASE) == Phase.BASELINE and state == TrialState.COMPLETED:
            baselines.setdefault(tags.get(Tag.MODEL, ""), run)
    selected = max(selection, key=selection.get) if selection else None
    rows = [Row(loss, model=models[loss]) for loss in sorted(seed_runs)]
    selected_row = next((row for row in rows if row.loss == selected), None)
    judge = Judge(tracker)
    rounds = Rounds(fewest, most, selected)
    decided: dict[str, dict[str, str]] = {family: {} for family in FAMILIES}
    done = {
        loss: sorted(int(r.data.tags.get(Tag.SEED, 0)) - first_seed for r in group) for loss, group in seed_runs.items()
    }
    last_look = max((len(indices) for indices in done.values()), default=0)
    for look in range(fewest, last_look + 1):
        window = {
            loss: [r for r in group if int(r.data.tags.get(Tag.SEED, 0)) - first_seed < look]
            for loss, group in seed_runs.items()
        }
        judged, _, _ = judge_set(rows, window, selected_row, baselines, judge, metric, adjust=False)
        families: dict[str, list[Comparison]] = {
            "vs selected": [
                Comparison(
                    row.loss,
                    len(set(judged[row.loss].seeds) & set(judged[selected].seeds)),
                    judged[row.loss].vs_selected.p if judged[row.loss].vs_selected else None,
                )
                for row in rows
                if row.loss != selected and selected in judged
            ],
            "vs untrained": [
                Comparison(
                    row.loss,
                    len(judged[row.loss].seeds),
                    judged[row.loss].vs_baseline.p if judged[row.loss].vs_baseline else None,
                )
                for row in rows
            ],
        }
        for family, comparisons in families.items():
            decide(comparisons, fewest, most, decided=decided[family])
            for comparison in comparisons:
                if comparison.state != "undecided":
                    decided[family].setdefault(comparison.name, comparison.state)
            rounds.states[family] = {c.name: c for c in comparisons}
    rounds.seeds = {loss: len(indices) for loss, indices in done.items()}
    return rounds
