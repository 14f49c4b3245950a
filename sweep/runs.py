"""The MLflow run of a trial: created with the resolved spec and provenance, closed with its state,
and the reason it failed, read from the (Ray-wrapped) error or left on the run by a worker."""

from __future__ import annotations

from . import negatives
from .checkpoint import keep_final
from .inputs import mining_input, negatives_dir, train_pairs, uses_negatives
from .prepare import recorded
from .prompts import spec_prompts
from .protocol import Tag, TrialState
from .spec import Spec
from .tracking import DataInput, Provenance, Tracker, flatten

LOSS_LABEL = "loss.label"  # an MLflow param beside the spec's own: the loss as leaderboards name it


class TrialFailed(RuntimeError):
    """A trial stopped on an error the run records (divergence, out of memory, a worker error)."""


def start_trial_run(
    spec: Spec,
    tracker: Tracker,
    data_fingerprint: str,
    provenance: Provenance,
    *,
    inputs: list[DataInput] = (),
    parent_run_id: str | None = None,
    tags: dict | None = None,
) -> str:
    """Create the trial's MLflow run: params (the resolved spec), provenance tags (the driver's), the
    spec file, and the mined negatives it reads (their cache key and summary)."""
    data = recorded(spec, tracker.uri)
    params = flatten(data) | {LOSS_LABEL: spec.loss_label()} | spec_prompts(spec).params()
    run_tags = provenance.tags(spec.hash(), data_fingerprint) | {Tag.LOSS: spec.loss_label()}
    mined = mined_negatives(spec)
    if mined is not None:
        run_tags[Tag.NEGATIVES_KEY] = mined[0]
    run_tags |= tags or {}
    run_id = tracker.start_run(spec.mlflow.experiment, spec.name, params, run_tags, data, parent_run_id=parent_run_id)
    tracker.log_inputs(run_id, list(inputs))
    if mined is not None and mined[1]:
        tracker.log_dict(run_id, mined[1], "negatives.json")
    return run_id


def mined_negatives(spec: Spec) -> tuple[str, dict | None] | None:
    """The cache key and summary of the mined negatives a trial trains on; None when it uses none."""
    if spec.negatives is None:
        return None
    pairs = train_pairs(spec)
    if not uses_negatives(spec, pairs.features):
        return None
    directory = negatives_dir(spec, mining_input(spec, pairs))
    return directory.rstrip("/").rsplit("/", 1)[-1], negatives.read_summary(directory)


def close_run(tracker: Tracker, run_id: str, state: TrialState, tags: dict[str, str] | None = None) -> None:
    """Record how the trial ended and end its run (FINISHED, or FAILED for a failed trial)."""
    tracker.set_tags(run_id, {Tag.STATE: state} | (tags or {}))
    tracker.end_run(run_id, "FAILED" if state == TrialState.FAILED else "FINISHED")


def failure_tags(kind: str, message: str) -> dict[str, str]:
    """What a worker leaves on its run when it stops on a failure (`kind`: diverged, out_of_memory)."""
    return {Tag.STATE: TrialState.FAILED, Tag.FAILURE: kind, Tag.ERROR: message[:5000]}


def failure_message(text: str) -> str:
    """The line of a (Ray-wrapped) error that says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for marker in ("TrialOutOfMemory:", "TrainingDiverged:", "TrialFailed:", "UnsafeCheckpoint:"):
        for line in reversed(lines):
            if marker in line:
                return line[line.index(marker) + len(marker) :].strip()
    return lines[-1] if lines else "unknown error"


def raise_if_failed(tracker: Tracker, run_id: str) -> None:
    """A worker that stopped cleanly on a failure (a NaN loss) leaves the reason on the run."""
    tags = tracker.client.get_run(run_id).data.tags
    if tags.get(Tag.FAILURE):
        raise TrialFailed(tags[Tag.ERROR])


LOST_NOTE = (
    "The sweep's driver stopped after this trial started but before Tune saved it, so `--resume` "
    "ran the trial again under a new trial id. Deleted so that each trial has one run; restore it "
    "from the UI's deleted runs to look at it."
)


def delete_lost_runs(tracker: Tracker, parent_run_id: str, phase: str) -> list[str]:
    """Delete the child runs of a finished phase still open: trials Tune never recorded, whose runs no
    callback will close. Called once each trial Tune knows has had its run closed; returns their ids."""
    lost = [
        run.info.run_id
        for run in tracker.children(parent_run_id)
        if run.data.tags.get(Tag.PHASE) == phase and run.info.status == "RUNNING"
    ]
    for run_id in lost:
        tracker.set_tags(run_id, {"mlflow.note.content": LOST_NOTE})
        tracker.end_run(run_id, "KILLED")
        tracker.client.delete_run(run_id)
    return lost


def keep_final_checkpoints(tracker: Tracker, parent_run_id: str, phase: str) -> int:
    """A finished phase's completed and pruned trials keep only their final model (what export and
    verdict scoring read); failed trials keep everything. Returns the bytes freed."""
    finished = (TrialState.COMPLETED, TrialState.PRUNED)
    freed = 0
    for run in tracker.children(parent_run_id):
        tags = run.data.tags
        if tags.get(Tag.PHASE) == phase and tags.get(Tag.STATE) in finished and tags.get(Tag.CHECKPOINT):
            freed += keep_final(tags[Tag.CHECKPOINT])
    return freed
