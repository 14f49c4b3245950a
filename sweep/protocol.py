"""The names lossweep's processes agree on: the MLflow tags of sweeps and trials, trial states, phases.

A driver, Tune's trial actors and Ray Train workers write and read these on the same runs; each key
is spelled once, here.
"""

from __future__ import annotations

from enum import Enum


class _Named(str, Enum):
    """A string constant with a name: compares equal to its value and prints as it."""

    def __str__(self) -> str:
        return self.value


class TrialState(_Named):
    """How a trial's run ended (`running`: not yet, or stopped by an interrupt)."""

    RUNNING = "running"
    COMPLETED = "completed"
    PRUNED = "pruned"
    FAILED = "failed"

    @classmethod
    def closed(cls) -> tuple[TrialState, ...]:
        return (cls.COMPLETED, cls.PRUNED, cls.FAILED)


class Phase(_Named):
    """Which part of a sweep a child run belongs to."""

    SEARCH = "search"  # a search's trials
    TUNE = "tune"  # a compare's per-loss tuning trials
    RESCORE = "rescore"  # a compare's best tuning configurations re-trained with fresh seeds
    SEEDS = "seeds"  # a compare's re-trainings of each loss's chosen configuration
    BASELINE = "baseline"  # the untrained model, scored once
    VERDICT = "verdict"  # a search winner's checkpoint on the verdict sets


class Report:
    """The keys of a trial's reports to Ray Tune and Ray Train, beside its metrics."""

    STEP = "step"  # the optimisation step a report is from: ASHA's time attribute
    CHECKPOINT_PATH = "checkpoint_path"  # a worker group's checkpoint, as Ray's TuneReportCallback forwards it
    TRIAL_ID = "trial_id"  # Tune's id of the trial, in its results


class Tag:
    """MLflow tag keys (`lossweep.*`)."""

    # A sweep's parent run
    ROLE = "lossweep.role"  # "sweep" on a parent run
    SWEEP = "lossweep.sweep"  # the sweep's name, on the parent and every child
    MODE = "lossweep.mode"
    METRIC = "lossweep.metric"  # the selection metric
    SELECT_ON = "lossweep.select_on"
    VERDICT_METRICS = "lossweep.verdict_metrics"  # JSON list, one per verdict set
    GUARD_METRICS = "lossweep.guard_metrics"  # JSON list, one per guard set
    BEST_LOSS = "lossweep.best_loss"
    BEST_RUN_ID = "lossweep.best_run_id"
    NEGATIVES_KEYS = "lossweep.negatives_keys"  # JSON list of the mined sets' cache keys
    PLAN = "lossweep.plan"  # JSON: verdict set -> family -> minimum detectable difference, planned
    WARM_START = "lossweep.warm_start"  # JSON: how many earlier trials each study was told (ids: warm_start.json)
    # A trial's run
    TRIAL_ID = "lossweep.trial_id"  # Tune's trial id: finds the run again on --resume
    PHASE = "lossweep.phase"
    LOSS = "lossweep.loss"  # the candidate: the loss's label (`<loss> @ <model>` in a sweep over models)
    MODEL = "lossweep.model"  # a sweep over several base models: the label of the run's model (baselines too)
    SEED = "lossweep.seed"
    TRIAL_CONFIG = "lossweep.trial_config"  # the sampled configuration, JSON
    STATE = "lossweep.trial_state"
    LAST_STEP = "lossweep.last_step"
    TOTAL_STEPS = "lossweep.total_steps"  # a trial's optimisation steps, for progress displays
    CHECKPOINT = "lossweep.checkpoint"
    ERROR = "lossweep.error"
    FAILURE = "lossweep.failure"  # diverged | out_of_memory
    EARLIER_FAILURE = "lossweep.earlier_failure"  # what an attempt before a restart failed on
    ATTEMPTS = "lossweep.attempts"
    RESTARTS = "lossweep.restarts"
    RESUMED_FROM_STEP = "lossweep.resumed_from_step"
    SCORES_RUN = "lossweep.scores_run"  # a verdict run: the trial whose checkpoint it scored
    NEGATIVES_KEY = "lossweep.negatives_key"
    # Provenance, on every run
    GIT_COMMIT = "lossweep.git_commit"  # the checkout the command started in (the experiment's)
    GIT_DIRTY = "lossweep.git_dirty"
    SOURCE_COMMIT = "lossweep.source_commit"  # the checkout lossweep's own code ran from (editable install)
    SOURCE_DIRTY = "lossweep.source_dirty"
    SPEC_HASH = "lossweep.spec_hash"
    DATA_FINGERPRINT = "lossweep.data_fingerprint"
    VERSION = "lossweep.version."  # + package name
    # Operations
    REPRODUCES = "lossweep.reproduces"
    REPRODUCTION_MATCHED = "lossweep.reproduction_matched"
    REPRODUCTION_MAX_DIFF = "lossweep.reproduction_max_diff"
    EXPORTED_MODEL = "lossweep.exported_model"


SWEEP_ROLE = "sweep"  # the value of Tag.ROLE on a parent run
SEED_ROUNDS_ARTIFACT = "seed_rounds.json"  # on a compare's parent run: adaptive seeds' last states, seeds per loss
