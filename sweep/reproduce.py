"""`lossweep reproduce RUN_ID`: re-run one trial from what its MLflow run recorded, and compare.

The run's `spec.yaml` is the trial's fully resolved spec (seed included). Before anything runs, the
data fingerprint and package versions recorded on the run are checked against today's; a mismatch
is reported (and stops the reproduction unless forced). Afterwards every evaluation metric and the
training loss are compared step by step; on CPU with the same versions they match to 1e-6.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .data import fingerprint
from .driver import train
from .inputs import train_pairs
from .metrics import TRAIN_LOSS, is_eval
from .protocol import Tag
from .spec import Spec, parse_spec
from .tracking import Tracker, package_versions


class ProvenanceMismatch(RuntimeError):
    """The data or the packages differ from the recorded run; `problems` lists each difference."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class Reproduction:
    original_run_id: str
    run_id: str
    tolerance: float
    differences: dict[str, float] = field(default_factory=dict)  # metric -> max |difference| over common steps
    warnings: list[str] = field(default_factory=list)

    @property
    def max_difference(self) -> float:
        return max(self.differences.values(), default=0.0)

    @property
    def matched(self) -> bool:
        return bool(self.differences) and self.max_difference <= self.tolerance


def recorded_spec(tracker: Tracker, run_id: str) -> Spec:
    with tempfile.TemporaryDirectory() as tmp:
        path = tracker.client.download_artifacts(run_id, "spec.yaml", tmp)
        return parse_spec(yaml.safe_load(Path(path).read_text()), f"run {run_id}/spec.yaml")


def provenance_problems(tracker: Tracker, run_id: str, spec: Spec) -> list[str]:
    """Differences between the recorded data and packages and today's."""
    tags = tracker.client.get_run(run_id).data.tags
    problems = []
    recorded = tags.get(Tag.DATA_FINGERPRINT)
    current = fingerprint(train_pairs(spec))
    if recorded != current:
        problems.append(
            f"data fingerprint differs: the run trained on {recorded}, the data at {spec.data_dir} is now {current}"
        )
    for package, version in package_versions().items():
        before = tags.get(f"{Tag.VERSION}{package}")
        if before is not None and before != version:
            problems.append(f"package version differs: {package} was {before}, is now {version}")
    return problems


def reproduce(tracker: Tracker, run_id: str, *, force: bool = False, tolerance: float = 1e-6) -> Reproduction:
    """Train the run's recorded spec again and compare; `run_id` may be a unique prefix of the id."""
    run_id = tracker.find_run(run_id).info.run_id
    spec = recorded_spec(tracker, run_id)
    problems = provenance_problems(tracker, run_id, spec)
    if problems and not force:
        raise ProvenanceMismatch(problems)
    spec = spec.replace(name=f"reproduce {tracker.client.get_run(run_id).info.run_name}")
    result = train(spec, tracking_uri=tracker.uri, tags={Tag.REPRODUCES: run_id})
    outcome = Reproduction(run_id, result.run_id, tolerance, warnings=problems)
    original = tracker.client.get_run(run_id).data.metrics
    for name in sorted(original):
        if not (is_eval(name) or name == TRAIN_LOSS):
            continue
        before = {m.step: m.value for m in tracker.client.get_metric_history(run_id, name)}
        after = {m.step: m.value for m in tracker.client.get_metric_history(result.run_id, name)}
        common = set(before) & set(after)
        if common:
            outcome.differences[name] = max(abs(before[s] - after[s]) for s in common)
    tracker.set_tags(
        result.run_id,
        {
            Tag.REPRODUCTION_MATCHED: str(outcome.matched).lower(),
            Tag.REPRODUCTION_MAX_DIFF: f"{outcome.max_difference:.3g}",
        },
    )
    return outcome
