"""Runs found as people copy their ids: unique prefixes accepted, every miss a one-line error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lossweep.sweep.cli import main
from lossweep.sweep.protocol import SWEEP_ROLE, Tag, TrialState
from lossweep.sweep.report import SweepNotFound, find_sweep
from lossweep.sweep.runs import LOST_NOTE, close_run, delete_lost_runs
from lossweep.sweep.tracking import Provenance, RunNotFound, Tracker


@pytest.fixture
def store(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    parent = tracker.start_run("ids", "a sweep", {}, {Tag.ROLE: SWEEP_ROLE, Tag.SWEEP: "named"})
    trials = [tracker.start_run("ids", f"trial {i}", {}, {}, parent_run_id=parent) for i in range(20)]
    return tracker, parent, trials


def test_a_unique_prefix_finds_the_run_and_an_ambiguous_one_says_so(store):
    tracker, parent, trials = store
    assert tracker.find_run(parent[:8]).info.run_id == parent
    assert tracker.find_run(trials[3]).info.run_id == trials[3]
    firsts = [run[0] for run in [parent, *trials]]
    shared = next(c for c in firsts if firsts.count(c) > 1)  # 21 ids over 16 hex digits: two share one
    with pytest.raises(RunNotFound, match=f"runs have ids starting {shared} .*; give more of the id"):
        tracker.find_run(shared)
    with pytest.raises(RunNotFound, match="no run whose id starts 0000000 in sqlite"):
        tracker.find_run("0000000")
    with pytest.raises(RunNotFound, match="'not-an-id' is not a run id"):
        tracker.find_run("not-an-id")


def test_sweeps_are_found_by_name_or_id_prefix(store):
    tracker, parent, trials = store
    assert find_sweep(tracker, "named").info.run_id == parent
    assert find_sweep(tracker, parent[:10]).info.run_id == parent
    with pytest.raises(SweepNotFound, match="is not a lossweep sweep"):
        find_sweep(tracker, trials[0])
    with pytest.raises(SweepNotFound, match="no sweep named 'unknown'"):
        find_sweep(tracker, "unknown")


@pytest.mark.parametrize("command", [["reproduce", "66fd08a0"], ["report", "66fd08a0"], ["export", "66fd08a0", "out"]])
def test_an_unknown_id_is_a_one_line_error_for_every_command(store, command, tmp_path, capfd, monkeypatch):
    tracker = store[0]
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--tracking-uri", tracker.uri]) == 2  # refused
    err = capfd.readouterr().err
    assert err.startswith("error: no ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_runs_a_finished_phase_left_open_are_deleted_with_a_note_and_closed_ones_are_kept(store):
    tracker, parent, trials = store
    # Given a finished search whose trials were closed, and one run a killed driver never closed
    for run_id in trials[:3]:
        tracker.set_tags(run_id, {Tag.PHASE: "search"})
    close_run(tracker, trials[0], TrialState.COMPLETED)
    close_run(tracker, trials[1], TrialState.FAILED)
    tracker.set_tags(trials[3], {Tag.PHASE: "seeds"})  # another phase, still under way
    # When the phase's lost runs are deleted
    assert delete_lost_runs(tracker, parent, "search") == [trials[2]]
    # Then only the open run of that phase is gone from the sweep, ended and explained
    remaining = {run.info.run_id for run in tracker.children(parent)}
    assert trials[2] not in remaining and {trials[0], trials[1], trials[3]} <= remaining
    lost = tracker.client.get_run(trials[2])
    assert lost.info.lifecycle_stage == "deleted" and lost.info.status == "KILLED"
    assert lost.data.tags["mlflow.note.content"] == LOST_NOTE
    assert tracker.client.get_run(trials[1]).info.status == "FAILED"


def test_provenance_names_lossweep_s_own_checkout_outside_a_git_folder(tmp_path, monkeypatch):
    # A sweep started from a folder that is not a git checkout still records the code that ran.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOSSWEEP_GIT_COMMIT", raising=False)
    repo = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    tags = Provenance.here().tags("spec", "data")
    assert tags[Tag.GIT_COMMIT] == "unknown"  # the experiment folder's
    assert tags[Tag.SOURCE_COMMIT] == head and tags["mlflow.source.git.commit"] == head
    assert tags[Tag.SOURCE_DIRTY] in ("true", "false")
    assert tags[f"{Tag.VERSION}lossweep"] != "not installed"
