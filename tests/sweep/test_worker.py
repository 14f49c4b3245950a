"""The worker loop's bookkeeping on its MLflow run, without Ray: attempts, restarts, and a failure an
earlier attempt recorded."""

from __future__ import annotations

from types import SimpleNamespace

from lossweep.sweep.protocol import Tag, TrialState
from lossweep.sweep.runs import failure_tags
from lossweep.sweep.tracking import Tracker
from lossweep.sweep.worker import record_attempt


def test_a_restart_moves_an_earlier_attempt_s_failure_aside(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = tracker.start_run("attempts", "trial", {}, {})
    worker = SimpleNamespace(tracker=tracker, run_id=run_id, steps=100, start=0, sets=[])
    record_attempt(worker)
    tags = tracker.client.get_run(run_id).data.tags
    assert tags[Tag.ATTEMPTS] == "1" and Tag.RESTARTS not in tags
    # the first attempt's surviving rank read a NaN from a collective whose peer died with its node
    tracker.set_tags(run_id, failure_tags("diverged", "loss became nan at step 37"))
    worker.start = 30  # the restart resumes from the checkpoint of step 30
    record_attempt(worker)
    tags = tracker.client.get_run(run_id).data.tags
    assert tags[Tag.ATTEMPTS] == "2" and tags[Tag.RESTARTS] == "1" and tags[Tag.RESUMED_FROM_STEP] == "30"
    assert Tag.FAILURE not in tags and Tag.ERROR not in tags and tags[Tag.STATE] == TrialState.RUNNING
    assert tags[Tag.EARLIER_FAILURE] == "attempt 1: loss became nan at step 37"
