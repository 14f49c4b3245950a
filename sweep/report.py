"""`lossweep report`: a sweep's leaderboard and plots, rebuilt from its MLflow runs alone."""

from __future__ import annotations

from mlflow.entities import ViewType

from .leaderboard import Leaderboard
from .protocol import SWEEP_ROLE, Tag
from .tracking import RUN_ID, RunNotFound, Tracker
from .verdict import build_leaderboard


class SweepNotFound(RunNotFound):
    """No sweep parent run matches the name or id; the message says where it looked."""


def find_sweep(tracker: Tracker, sweep: str):
    """The parent run of a sweep, by sweep name (the most recent with that name) or by run id (or a
    unique prefix of it)."""
    named = _by_name(tracker, sweep)
    if named is not None:
        return named
    if not RUN_ID.fullmatch(sweep):
        raise SweepNotFound(
            f"no sweep named {sweep!r} in {tracker.uri}; pass its name or parent run id, or check --tracking-uri"
        )
    run = tracker.find_run(sweep)
    if run.data.tags.get(Tag.ROLE) != SWEEP_ROLE:
        raise SweepNotFound(f"run {run.info.run_id} is not a lossweep sweep (no tag {Tag.ROLE}={SWEEP_ROLE})")
    return run


def _by_name(tracker: Tracker, sweep: str):
    experiments = [e.experiment_id for e in tracker.client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    runs = tracker.client.search_runs(
        experiments,
        filter_string=f"tags.`{Tag.ROLE}` = '{SWEEP_ROLE}' and tags.`{Tag.SWEEP}` = '{sweep}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def report(tracker: Tracker, sweep: str, log: bool = True) -> tuple[Leaderboard, str]:
    """Rebuild the leaderboard (and, with `log`, re-render its artifacts on the parent run)."""
    parent = find_sweep(tracker, sweep)
    board = build_leaderboard(tracker, parent.info.run_id)
    if log:
        board.log(tracker, parent.info.run_id)
    return board, parent.info.run_id
