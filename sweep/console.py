"""What a user sees in the terminal: one live table of a sweep's trials, the progress of one trial,
the leaderboard, where the results are. Everything else (Ray's, Tune's and the workers' own output)
goes to a log file under the run's output folder; `--verbose` shows it live instead.

The table and the progress bar read the MLflow runs the trials write (a thread polls the store), so
they show the same numbers as the MLflow UI, for trials on any node of a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .leaderboard import readable
from .metrics import TRAIN_LOSS, TRAIN_SAMPLES_PER_SECOND, TRAIN_STEP
from .protocol import Phase, Tag, TrialState
from .space import TrialConfig
from .tracking import Tracker

POLL_SECONDS = 2.0
SHOWN_FINISHED = 12  # finished trials kept in the live table (all running ones are shown)


@dataclass
class Terminal:
    """Where lossweep's own output goes (`out`, `err`), and the log file that took the rest."""

    out: Console
    err: Console
    log: Path | None = None
    kept: bool = False

    def keep_log(self) -> None:
        """The run has started: keep the log (a command refused before it starts leaves none) and
        say once where it is."""
        if self.log is not None and not self.kept:
            self.kept = True
            self.out.print(f"[dim]logs of Ray and the workers: {escape(str(self.log))}[/]")


@contextmanager
def terminal(log: Path, verbose: bool = False) -> Iterator[Terminal]:
    """Send this process's standard output and error, and those of every process it starts (a local
    Ray, its workers), to `log`; lossweep writes to the terminal through the consoles it yields.
    Unless `keep_log()` is called, the log and the folders made for it are removed at the end."""
    if verbose:
        yield Terminal(Console(), Console(stderr=True))
        return
    made = [folder for folder in (*reversed(log.parents),) if not folder.exists()]
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only output folder (preflight says so): a temporary log
        made, log = [], Path(tempfile.mkdtemp(prefix="lossweep-logs-")) / log.name
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    out = os.fdopen(os.dup(saved_out), "w", buffering=1)
    err = os.fdopen(os.dup(saved_err), "w", buffering=1)
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(target, 1)
    os.dup2(target, 2)
    term = Terminal(_console(out), _console(err, stderr=True), log)
    try:
        yield term
    finally:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()  # Ray echoes its workers' last lines late: into the log, not the terminal
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for fd in (target, saved_out, saved_err):
            os.close(fd)
        out.close()
        err.close()
        if not term.kept:
            log.unlink(missing_ok=True)
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _console(stream, stderr: bool = False) -> Console:
    return Console(file=stream, stderr=stderr, width=None if stream.isatty() else 160)


def log_path(output_dir: str, name: str, command: str) -> Path:
    """`<output_dir>/<name>/logs/<command>-<time>.log`: next to the checkpoints of the same run (on this
    machine's disk under ~/.cache/lossweep when output_dir is a bucket: the log is written as it grows)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path.home() / ".cache" / "lossweep" if "://" in output_dir else Path(output_dir).expanduser()
    return base / name / "logs" / f"{command}-{stamp}.log"


def print_leaderboard(board, console: Console | None = None) -> None:
    """The verdict table, the budget table (with each loss's configuration), the test and the verdict."""
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    titles = {
        "verdict": f"leaderboard: {board.mode}, selected on {board.select_on} ({board.metric})",
        "budget": "what each loss used"
        + (" (tuning + seed runs)" if board.mode == "compare" else "")
        + ", and its chosen configuration",
    }
    for part, title in titles.items():
        columns, records = board.table(part)
        table = Table(title=escape(title))
        for column in columns:
            table.add_column(escape(column), overflow="fold")
        for record in records:
            table.add_row(*(escape(cell) for cell in record))  # a value such as [query_to_doc] is not markup
        console.print(table)
    if board.budgets:
        columns, records = board.budget_table()
        table = Table(title="the verdict at each budget (no decision read these)")
        for column in columns:
            table.add_column(escape(column), overflow="fold")
        for record in records:
            table.add_row(*(escape(cell) for cell in record))
        console.print(table)
    if board.test:
        console.print(f"test: {board.test}", markup=False, highlight=False)
    console.print(board.verdict, markup=False, highlight=False)
    if board.importances:
        console.print("what mattered (fANOVA share of the selection metric's variance, per loss):")
        for line in board.importance_lines():
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


# --- A sweep: the live table of trials ----------------------------------------------------------------------


@dataclass
class Plan:
    """What a sweep will run: its parent run, how many trials, how many at once, of how many steps."""

    parent_run_id: str
    trials: int
    max_concurrent: int
    steps: int
    metric: str


class SweepMonitor:
    """Polls a sweep's child runs and shows them: a live table on a terminal, one line per trial
    that starts or ends elsewhere (a log, `ray job logs`)."""

    def __init__(self, console: Console, tracking_uri: str, plan: Plan) -> None:
        self.console, self.tracking_uri, self.plan = console, tracking_uri, plan
        self.started = time.time()
        self.seen: dict[str, str] = {}  # run id -> last state shown (event mode)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lossweep-monitor", daemon=True)
        self._live = Live(console=console, refresh_per_second=1, transient=False) if console.is_terminal else None

    def __enter__(self) -> SweepMonitor:
        if self._live is not None:
            self._live.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        runs = self._runs()
        if self._live is not None:
            self._live.update(self.render(runs))
            self._live.stop()
        else:
            self._events(runs)
            self.console.print(self.render(runs))

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            runs = self._runs()
            if self._live is not None:
                self._live.update(self.render(runs))
            else:
                self._events(runs)

    def _runs(self) -> list:
        try:
            return Tracker(self.tracking_uri).children(self.plan.parent_run_id)
        except Exception:  # the store is busy or briefly unreachable: show the last state next time
            return []

    def _events(self, runs: list) -> None:
        for run in runs:
            state = run.data.tags.get(Tag.STATE, TrialState.RUNNING)
            if self.seen.get(run.info.run_id) == state:
                continue
            self.seen[run.info.run_id] = state
            row = self._row(run, differing=None)
            say = partial(self.console.print, markup=False, highlight=False)
            if row["phase"] in (Phase.BASELINE, Phase.VERDICT):
                if state != TrialState.RUNNING:
                    say(f"  scored    {row['trial']} {row['loss']} on the eval sets in {row['elapsed']}")
            elif state == TrialState.RUNNING:
                say(f"  started   {row['trial']} {row['loss']} {row['config']}")
            else:
                score = f", {row['metric']} {row['score']}" if row["score"] else ""
                say(f"  {state:<9} {row['trial']} {row['loss']} in {row['elapsed']}{score}")

    def render(self, runs: list) -> Group:
        """The table: running trials and the latest finished ones, and a line of totals with an ETA."""
        trials = [r for r in runs if r.data.tags.get(Tag.PHASE) not in (Phase.BASELINE, Phase.VERDICT)]
        differing = _differing([_config(r) for r in trials])
        states = [r.data.tags.get(Tag.STATE, TrialState.RUNNING) for r in trials]
        running = [r for r, s in zip(trials, states, strict=True) if s == TrialState.RUNNING]
        finished = [r for r, s in zip(trials, states, strict=True) if s != TrialState.RUNNING]
        shown = finished[-SHOWN_FINISHED:] + running
        metric = self.plan.metric.split("/", 2)[-1]
        table = Table(title=escape(f"trials ({metric} on the selection set)"), title_justify="left")
        for column in ("trial", "phase", "loss", "params", "step", "train loss", metric, "state", "elapsed"):
            table.add_column(column, no_wrap=column in ("trial", "step", "state", "elapsed"))
        for run in shown:
            row = self._row(run, differing)
            style = {"pruned": "dim", "failed": "red", "completed": "green"}.get(row["state"], "")
            cells = ("trial", "phase", "loss", "config", "step", "loss_value", "score", "state", "elapsed")
            table.add_row(*(escape(row[cell]) for cell in cells), style=style)  # [query_to_doc] is a value
        return Group(table, Text(self._totals(trials, states)))

    def _totals(self, trials: list, states: list[str]) -> str:
        counts = {state: states.count(state) for state in TrialState}
        done = len(trials) - counts[TrialState.RUNNING]
        text = (
            f"{done}/{self.plan.trials} trials finished: {counts[TrialState.COMPLETED]} completed, "
            f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAILED]} failed; "
            f"{counts[TrialState.RUNNING]} running; elapsed {_duration(time.time() - self.started)}"
        )
        durations = [(r.info.end_time - r.info.start_time) / 1000 for r in trials if r.info.end_time]
        if durations and done < self.plan.trials:
            remaining = (self.plan.trials - done) * (sum(durations) / len(durations)) / self.plan.max_concurrent
            text += f"; about {_duration(remaining)} to go"
        return text

    def _row(self, run, differing: set[str] | None) -> dict[str, str]:
        metrics, tags = run.data.metrics, run.data.tags
        config = _config(run)
        shown = config if differing is None else {k: v for k, v in config.items() if k in differing}
        step = metrics.get(TRAIN_STEP)
        end = run.info.end_time / 1000 if run.info.end_time else time.time()
        score = metrics.get(self.plan.metric)
        return {
            "trial": run.info.run_id[:8],
            "phase": tags.get(Tag.PHASE, ""),
            "loss": tags.get(Tag.LOSS, "?"),
            "config": readable(shown),
            "step": f"{int(step) if step is not None else 0}/{self.plan.steps}",
            "loss_value": "" if TRAIN_LOSS not in metrics else f"{metrics[TRAIN_LOSS]:.4f}",
            "metric": self.plan.metric.split("/", 2)[-1],
            "score": "" if score is None else f"{score:.4f}",
            "state": tags.get(Tag.STATE, TrialState.RUNNING),
            "elapsed": _duration(end - run.info.start_time / 1000),
        }


def _config(run) -> dict:
    """A trial's sampled values, flat (`scale`, `learning_rate`, ...)."""
    return TrialConfig.of_run(run).flat()


def _differing(configs: list[dict]) -> set[str]:
    """The parameters whose values differ between trials: the few worth a column."""
    keys = {k for c in configs for k in c}
    return {k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1}


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


# --- One trial: a progress bar ---------------------------------------------------------------------------------


class TrainProgress:
    """Polls one trial's run and shows step / total, the loss and samples per second."""

    def __init__(self, console: Console, tracking_uri: str, total_steps: int | None) -> None:
        self.console, self.tracking_uri = console, tracking_uri
        self.run_id: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lossweep-progress", daemon=True)
        self.progress = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[speed]} samples/s"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )
        self.task = self.progress.add_task("train", total=total_steps, loss="-", speed="-")

    def follow(self, run_id: str) -> None:
        self.run_id = run_id

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._update()
        self.progress.stop()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._update()

    def _update(self) -> None:
        if self.run_id is None:
            return
        try:
            run = Tracker(self.tracking_uri).client.get_run(self.run_id)
        except Exception:  # briefly unreachable: next time
            return
        metrics = run.data.metrics
        total = run.data.tags.get(Tag.TOTAL_STEPS)
        if total:
            self.progress.update(self.task, total=int(total))
        if TRAIN_STEP in metrics:
            self.progress.update(
                self.task,
                completed=int(metrics[TRAIN_STEP]),
                loss=f"{metrics.get(TRAIN_LOSS, float('nan')):.4f}",
                speed=f"{metrics.get(TRAIN_SAMPLES_PER_SECOND, float('nan')):.1f}",
            )
