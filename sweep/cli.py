"""The `lossweep` command: one entry point, one subcommand per job.

Exit status, for every subcommand: 0 done; 1 a run failed (or a reproduction did not match); 2 a
spec, file, id or argument was refused, before anything ran; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lossweep.losses import LOSSES, fit_report
from lossweep.losses.fit import Fit

OK, FAILED, REFUSED, INTERRUPTED = 0, 1, 2, 130
EXIT_STATUS = (
    "exit status: 0 done; 1 a run failed (reproduce: the metrics did not match); 2 a spec, file, id or "
    "argument was refused before anything ran; 130 interrupted"
)


def _refused(error: BaseException) -> int:
    """A refusal: its message on standard error (a spec's names the file and lists every error), no
    traceback."""
    from lossweep.sweep.spec import SpecError

    print(error if isinstance(error, SpecError) else f"error: {error}", file=sys.stderr)
    return REFUSED


def _quiet_loading(verbose: bool) -> None:
    """No progress bars or info logs of datasets, transformers and the Hub in lossweep's own output:
    loading data or a model is not news (`--verbose` keeps them)."""
    if verbose:
        return
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # reading a run's files is not news
    import datasets
    import huggingface_hub
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    huggingface_hub.utils.logging.set_verbosity_error()
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)


def _tracking_refused(spec_uri: str | None, flag: str | None) -> tuple[str, int | None]:
    """The tracking URI by the one precedence, and REFUSED (after saying why) when its store cannot be
    reached: a server that does not answer within seconds, a store that cannot be written."""
    from lossweep.sweep.preflight import tracking_problems
    from lossweep.sweep.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(spec_uri, flag)
    field = "--tracking-uri" if flag else "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else None
    problems = tracking_problems(uri, field or ("mlflow.tracking_uri" if spec_uri else "the default tracking store"))
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return uri, REFUSED
    return uri, None


def _format_cell(name: str) -> str:
    entry = LOSSES[name]
    if entry.modifier:
        return "wraps a base loss; takes the base's format"
    return "\n".join(fmt.describe() for fmt in entry.formats)


def _params_cell(name: str) -> str:
    tuned = [param.describe() for param in LOSSES[name].params if param.tune]
    return ", ".join(tuned) or "-"


def losses_command(args: argparse.Namespace) -> int:
    """Print the catalogue; with --data, which losses fit that dataset and why the others do not
    (with --negatives, also which fit once hard negatives are mined for its pairs, and in which shape)."""
    fits: dict[str, Fit] = {}
    mined: dict[str, str] = {}
    if args.data:
        from lossweep.sweep.data import DataError, data_dir_origin, default_data_dir, load_local, locate

        root, origin = (Path(args.data_dir), "--data-dir") if args.data_dir else (default_data_dir(), data_dir_origin())
        try:
            dataset = load_local(locate(args.data, root, origin), split=args.split, view=args.view)
        except DataError as error:
            return _refused(error)
        fits = {f.loss: f for f in fit_report(dataset)}
        if args.negatives:
            mined = _with_mined_negatives(dataset, args.num_negatives)
    if args.json:
        rows = []
        for name, entry in LOSSES.items():
            row = {
                "name": name,
                "formats": [fmt.describe() for fmt in entry.formats],
                "in_batch": entry.in_batch,
                "modifier": entry.modifier,
                "params": {
                    p.name: {"default": p.default, "search": list(p.search), "tune": p.tune} for p in entry.params
                },
                "needs": list(entry.needs),
            }
            if name in fits:
                row["fits"], row["reason"] = fits[name].ok, fits[name].reason
            if args.negatives and name in fits:
                row["fits_with_mined_negatives"] = mined.get(name)
            rows.append(row)
        print(json.dumps(rows, indent=2, default=str))
        return OK
    table = Table(title=f"sentence-transformers losses ({len(LOSSES)})", show_lines=True)
    table.add_column("loss", style="bold")
    table.add_column("input format")
    table.add_column("in-batch", justify="center")
    table.add_column("tunable hyperparameters: default [search range]")
    if fits:
        table.add_column(f"fits {escape(args.data)}")
    if args.negatives and fits:
        table.add_column("with mined negatives")
    for name, entry in LOSSES.items():
        row = [escape(name), escape(_format_cell(name)), "yes" if entry.in_batch else "", escape(_params_cell(name))]
        if fits:
            fit = fits.get(name)
            row.append(
                "(as its base)" if fit is None else "[green]yes[/]" if fit.ok else f"[red]no[/]: {escape(fit.reason)}"
            )
        if args.negatives and fits:
            shape = escape(mined.get(name, ""))
            row.append("(as its base)" if name not in fits else f"[green]yes[/]: {shape}" if name in mined else "no")
        table.add_row(*row)
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    if fits:
        fitting = [name for name, fit in fits.items() if fit.ok]
        console.print(f"{len(fitting)} losses fit {args.data}: {', '.join(fitting) or 'none'}", markup=False)
    if args.negatives and fits:
        extra = [name for name in mined if not fits[name].ok]
        console.print(f"{len(extra)} more with mined negatives: {', '.join(extra) or 'none'}")
    return OK


def _with_mined_negatives(dataset, num_negatives: int) -> dict[str, str]:
    """Loss -> the shape it would train on once negatives are mined for these (anchor, positive) pairs."""
    from lossweep.losses.formats import LABEL_COLUMNS
    from lossweep.sweep.negatives import mined_shape

    if len(dataset.column_names) != 2 or any(c in LABEL_COLUMNS for c in dataset.column_names):
        return {}  # mining needs (anchor, positive) pairs
    out = {}
    for name in LOSSES:
        shape = mined_shape(name, num_negatives=num_negatives)
        if shape is not None:
            out[name] = f"{shape} ({num_negatives} per anchor)" if shape != "labeled-pairs" else "labeled pairs (1 / 0)"
    return out


def _load(path: str):
    from lossweep.sweep.spec import load_spec

    return load_spec(path)


def validate_command(args: argparse.Namespace) -> int:
    """Exit 0 when the spec is valid, its data and models load and its tracking store answers;
    otherwise print every error and exit 2."""
    from lossweep.sweep.inputs import validate
    from lossweep.sweep.spec import SpecError

    try:
        spec = _load(args.spec)
        loaded = validate(spec, args.spec, load_data=not args.no_data)
    except SpecError as error:
        return _refused(error)
    _, refused = _tracking_refused(spec.mlflow.tracking_uri, args.tracking_uri)
    if refused:
        return refused
    from lossweep.sweep.prompts import spec_prompts

    if loaded and loaded.parts:
        rows = ", " + ", ".join(f"{len(part)} {label} rows" for label, part in loaded.parts.items())
    else:
        rows = f", {len(loaded.train)} training rows" if loaded else ""
    adapter = spec.adapter
    trains = "trains every weight"
    if adapter is not None:
        layers = ", ".join(adapter.target_modules or ()) or "PEFT's default layers"
        trains = f"trains a LoRA adapter (r={adapter.r}, alpha={adapter.alpha:g}) on {layers}"
    models = spec.model_specs()
    if "" in models:
        said = spec_prompts(spec).describe()
    else:  # a sweep over base models: each with its prompts
        said = "base models: " + "; ".join(
            f"{label} ({spec_prompts(each).describe()})" for label, each in models.items()
        )
    print(f"{args.spec}: valid ({spec.loss_label()}{rows}); {trains}; {said}")
    return OK


def train_command(args: argparse.Namespace) -> int:
    """Validate, train on Ray (local, or the cluster in RAY_ADDRESS) with a progress bar, print the
    metrics and where the MLflow run is; Ray's own output goes to a log file."""
    from lossweep.sweep.console import TrainProgress, log_path, terminal
    from lossweep.sweep.driver import train
    from lossweep.sweep.metrics import is_eval
    from lossweep.sweep.runs import TrialFailed
    from lossweep.sweep.spec import SpecError

    try:
        spec = _load(args.spec)
    except SpecError as error:
        return _refused(error)
    with terminal(log_path(spec.output_dir, spec.name, "train"), args.verbose) as term:

        def progress(uri: str, run_id: str) -> TrainProgress:
            term.keep_log()
            bar = TrainProgress(term.out, uri, spec.training.steps)
            bar.follow(run_id)
            return bar

        try:
            result = train(spec, source=args.spec, tracking_uri=args.tracking_uri, watch=progress)
        except SpecError as error:
            term.err.print(str(error), markup=False, highlight=False, soft_wrap=True)
            return REFUSED
        except TrialFailed as error:
            term.err.print(f"failed: {error} (recorded on the MLflow run, status FAILED)", markup=False, soft_wrap=True)
            return FAILED
        except KeyboardInterrupt:
            term.err.print("interrupted: the MLflow run is marked KILLED; its last checkpoint is kept")
            return INTERRUPTED
        term.out.print("finished:", markup=False)
        for name in sorted(k for k in result.metrics if is_eval(k) and "/dim_" not in k):
            term.out.print(f"  {name} = {result.metrics[name]:.4f}", markup=False, highlight=False)
        for line in result.links:
            term.out.print(line, markup=False, highlight=False, soft_wrap=True)
    return OK


def sweep_command(args: argparse.Namespace) -> int:
    """Run (or --resume) a sweep with a live table of its trials; print the leaderboard and where the
    MLflow runs are. Ray's, Tune's and the workers' own output goes to a log file."""
    from lossweep.sweep.console import SweepMonitor, log_path, print_leaderboard, terminal
    from lossweep.sweep.phases import run_sweep
    from lossweep.sweep.spec import SpecError

    try:
        spec = _load(args.spec)
    except SpecError as error:
        return _refused(error)
    with terminal(log_path(spec.output_dir, spec.name, "sweep"), args.verbose) as term:

        def watch(uri: str, plan) -> SweepMonitor:
            term.keep_log()  # the sweep has started: its log stays
            return SweepMonitor(term.out, uri, plan)

        try:
            outcome = run_sweep(
                spec,
                source=args.spec,
                resume=args.resume,
                tracking_uri=args.tracking_uri,
                watch=watch,
                say=lambda line: term.out.print(line, markup=False, highlight=False, soft_wrap=True),
            )
        except SpecError as error:
            term.err.print(str(error), markup=False, highlight=False, soft_wrap=True)
            return REFUSED
        except KeyboardInterrupt:
            term.err.print(
                f"interrupted: finished trials and their MLflow runs are kept; resume: lossweep sweep {args.spec} "
                "--resume",
                markup=False,
                soft_wrap=True,
            )
            return INTERRUPTED
        for note in outcome.notes:
            term.out.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        print_leaderboard(outcome.leaderboard, term.out)
        for line in outcome.links:
            term.out.print(line, markup=False, highlight=False, soft_wrap=True)
    return OK


def report_command(args: argparse.Namespace) -> int:
    """Re-render a sweep's leaderboard and plots from MLflow alone."""
    from lossweep.sweep.console import print_leaderboard
    from lossweep.sweep.report import report
    from lossweep.sweep.tracking import RunNotFound, Tracker

    uri, refused = _tracking_refused(None, args.tracking_uri)
    if refused:
        return refused
    tracker = Tracker(uri)
    try:
        board, parent = report(tracker, args.sweep, log=not args.no_log)
    except RunNotFound as error:
        return _refused(error)
    print_leaderboard(board)
    for line in tracker.links(parent):
        print(line)
    return OK


def reproduce_command(args: argparse.Namespace) -> int:
    """Re-run one trial from its MLflow run; exit 0 when every metric matches within the tolerance."""
    from lossweep.sweep.reproduce import ProvenanceMismatch, reproduce
    from lossweep.sweep.spec import SpecError
    from lossweep.sweep.tracking import RunNotFound, Tracker

    uri, refused = _tracking_refused(None, args.tracking_uri)
    if refused:
        return refused
    tracker = Tracker(uri)
    try:
        outcome = reproduce(tracker, args.run_id, force=args.force, tolerance=args.tolerance)
    except (RunNotFound, SpecError) as error:
        return _refused(error)
    except ProvenanceMismatch as error:
        print(f"run {args.run_id} cannot be reproduced as recorded:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        print("nothing was run; pass --force to run anyway and see how far the metrics move", file=sys.stderr)
        return REFUSED
    for warning in outcome.warnings:
        print(f"warning: {warning}")
    for name, diff in outcome.differences.items():
        print(f"  {name}: max |difference| {diff:.3g}")
    verdict = "MATCH" if outcome.matched else "MISMATCH"
    print(f"{verdict}: max difference {outcome.max_difference:.3g} (tolerance {outcome.tolerance:g})")
    print(f"new run: {tracker.run_url(outcome.run_id)}")
    return OK if outcome.matched else FAILED


def export_command(args: argparse.Namespace) -> int:
    """Export a sweep's best trial (or a trial run) as a sentence-transformers model folder."""
    from lossweep.sweep.export import ExportError, export
    from lossweep.sweep.tracking import RunNotFound, Tracker

    uri, refused = _tracking_refused(None, args.tracking_uri)
    if refused:
        return refused
    tracker = Tracker(uri)
    try:
        exported = export(tracker, args.sweep, args.dir, log_to_mlflow=not args.no_mlflow, merge=args.merge)
    except (ExportError, RunNotFound) as error:
        return _refused(error)
    print(f"exported run {exported.run_id} to {exported.path} (SentenceTransformer({str(exported.path)!r}))")
    if exported.model_uri:
        print(f"logged to MLflow: {exported.model_uri}")
    return OK


def negatives_command(args: argparse.Namespace) -> int:
    """Mine the hard negatives a spec asks for (or find them in the cache): summary, examples, where.
    Ray's and the mining task's output go to the log file, as `sweep`'s do."""
    from lossweep.sweep import storage
    from lossweep.sweep.console import log_path, terminal
    from lossweep.sweep.inputs import resolve_paths, validate
    from lossweep.sweep.negatives import read
    from lossweep.sweep.spec import SpecError
    from lossweep.sweep.tasks import mine_negatives

    try:
        spec = _load(args.spec)
        if spec.negatives is None:
            raise SpecError(args.spec, ["negatives: missing; add a negatives section (e.g. `negatives: {}`)"])
        validate(spec, args.spec)
    except SpecError as error:
        return _refused(error)
    _, refused = _tracking_refused(spec.mlflow.tracking_uri, args.tracking_uri)  # the store its sweeps will use
    if refused:
        return refused
    spec = resolve_paths(spec)
    with terminal(log_path(spec.output_dir, spec.name, "negatives"), args.verbose) as term:
        out = term.out
        for variant in spec.mining_variants():
            directory, summary, fresh = mine_negatives(variant)
            if fresh:
                term.keep_log()
            how = f"mined in {summary['mining_seconds']:.1f} s" if fresh else "found in the cache (nothing mined)"
            out.print(f"[bold]negatives {escape(storage.basename(directory))}[/]: {how}")
            say = partial(out.print, markup=False, highlight=False, soft_wrap=True)
            say(f"  cache: {directory}")
            knobs = {k: v for k, v in summary["knobs"].items() if v is not None}
            say(f"  knobs: {', '.join(f'{k}={v}' for k, v in knobs.items())}")
            say(
                f"  {summary['pairs']} pairs -> {summary['rows']} rows x {summary['negatives_per_anchor']} negatives "
                f"({summary['anchors']} anchors; {summary['pairs_without_enough_negatives']} pairs without enough "
                f"negatives); {summary['dropped_false_negatives']} documents judged relevant dropped as negatives"
            )
            quantiles = summary["score_margin_quantiles"]
            say("  positive - negative score: " + ", ".join(f"{q} {v:+.3f}" for q, v in quantiles.items()))
            mined = read(directory)
            for row in mined.select(range(min(args.examples, len(mined)))):
                say(f"  - anchor:   {row['anchor'][:110]}")
                say(f"    positive: {row['positive'][:110]}  [{row['scores'][0]:.3f}]")
                say(f"    negative: {row['negative_1'][:110]}  [{row['scores'][1]:.3f}]")
    return OK


def plan_command(args: argparse.Namespace) -> int:
    """Before any training: the smallest difference the spec's verdict detects at 80% power, and what
    it would take to detect `--effect`. The untrained model is scored once (cached under output_dir)."""
    from lossweep.sweep.console import log_path, terminal
    from lossweep.sweep.inputs import resolve_paths, validate
    from lossweep.sweep.plan import available_items, make_plan
    from lossweep.sweep.space import build_space
    from lossweep.sweep.spec import SpecError
    from lossweep.sweep.tracking import Tracker

    try:
        spec = _load(args.spec)
        if spec.sweep is None:
            raise SpecError(args.spec, ["sweep: missing; a plan is of a sweep's verdict (add a sweep section)"])
        loaded = validate(spec, args.spec)
        if not spec.verdict_sets():
            raise SpecError(args.spec, ["eval: no verdict set (every eval set but sweep.select_on); nothing to plan"])
    except SpecError as error:
        return _refused(error)
    if args.seed_sd is not None and args.seed_sd < 0 or args.effect is not None and args.effect <= 0:
        return _refused(ValueError("--seed-sd must be >= 0 and --effect > 0"))
    uri, refused = _tracking_refused(spec.mlflow.tracking_uri, args.tracking_uri)
    if refused:
        return refused
    spec = resolve_paths(spec)
    losses = len(build_space(spec, loaded.train)[0].candidates)
    with terminal(log_path(spec.output_dir, spec.name, "plan"), args.verbose) as term:
        plan = make_plan(
            spec,
            losses,
            Tracker(uri),
            loaded.fingerprint(),
            seed_sd=args.seed_sd,
            effect=args.effect,
            available=available_items(spec),
        )
        for line in plan.lines() or ["plan: no verdict set has per-query values (STS Spearman): nothing to plan"]:
            term.out.print(line, markup=False, highlight=False, soft_wrap=True)
    return OK


def schema_command(args: argparse.Namespace) -> int:
    """Print the JSON Schema of experiment specs (editors validate and complete spec files with it)."""
    from lossweep.sweep.spec import json_schema

    print(json.dumps(json_schema(), indent=2))
    return OK


TRACKING_HELP = (
    "MLflow tracking URI. Precedence, for every command: this flag > MLFLOW_TRACKING_URI > the spec's "
    "mlflow.tracking_uri > sqlite:///./mlflow.db"
)
RAY_HELP = (
    "Ray: the cluster named by RAY_ADDRESS (e.g. ray://head:10001, or auto for one `ray start` began here), "
    "else a local Ray on 127.0.0.1 with this machine's CPUs. " + EXIT_STATUS
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lossweep", description=__doc__, epilog=EXIT_STATUS)
    commands = parser.add_subparsers(dest="command", required=True)
    # Options several commands share, declared once.
    tracking = argparse.ArgumentParser(add_help=False)
    tracking.add_argument("--tracking-uri", help=TRACKING_HELP)
    running = argparse.ArgumentParser(add_help=False)
    running.add_argument(
        "--verbose", action="store_true", help="show Ray's and the workers' logs live (default: only in the log file)"
    )

    losses = commands.add_parser(
        "losses", help="list the loss catalogue; with --data, which losses fit a dataset", epilog=EXIT_STATUS
    )
    losses.add_argument(
        "--data",
        help="a dataset folder or file (BEIR, STS Benchmark, SNLI, PAWS, Banking77, csv/jsonl/parquet); a relative "
        "path lies under the data folder, as in specs",
    )
    losses.add_argument(
        "--data-dir", help="where relative --data paths start (default: $LOSSWEEP_DATA_DIR, else ../shared/data)"
    )
    losses.add_argument("--split", default="train", help="split to read (default: train)")
    losses.add_argument("--view", help="layout to build from the folder, e.g. triplets or pair-class for SNLI")
    losses.add_argument(
        "--negatives", action="store_true", help="with --data: which losses fit once hard negatives are mined"
    )
    losses.add_argument("--num-negatives", type=int, default=1, help="negatives per anchor for --negatives (default 1)")
    losses.add_argument("--json", action="store_true", help="print JSON instead of a table")
    losses.set_defaults(func=losses_command)

    schema = commands.add_parser(
        "schema", help="print the JSON Schema of experiment specs (a copy: experiments/spec.schema.json)"
    )
    schema.set_defaults(func=schema_command)

    validate = commands.add_parser(
        "validate",
        parents=[tracking],
        help="check an experiment spec, its data, models and tracking store without running it",
        epilog=EXIT_STATUS,
    )
    validate.add_argument("spec", help="path to an experiment YAML file")
    validate.add_argument("--no-data", action="store_true", help="skip loading the data (structure and values only)")
    validate.set_defaults(func=validate_command)

    negatives = commands.add_parser(
        "negatives",
        parents=[tracking, running],
        help="mine the hard negatives a spec asks for, or find them in the cache; show a summary",
        epilog=RAY_HELP,
    )
    negatives.add_argument("spec", help="path to an experiment YAML file with a negatives section")
    negatives.add_argument("--examples", type=int, default=3, help="example triplets to print (default 3)")
    negatives.set_defaults(func=negatives_command)

    plan = commands.add_parser(
        "plan",
        parents=[tracking, running],
        help="before training: the smallest difference the spec's verdict can detect, and the seeds to detect one",
        epilog=RAY_HELP,
    )
    plan.add_argument("spec", help="path to an experiment YAML file with a sweep section")
    plan.add_argument(
        "--seed-sd",
        type=float,
        help="sd over seeds of one loss's mean score, instead of earlier sweeps' seed runs (default without "
        "them: 0.005, measured on Banking77 and Cranfield)",
    )
    plan.add_argument("--effect", type=float, help="a difference of the verdict metric to detect: the seeds needed")
    plan.set_defaults(func=plan_command)

    train = commands.add_parser(
        "train",
        parents=[tracking, running],
        help="train one configuration on Ray workers and track it in MLflow",
        epilog=RAY_HELP,
    )
    train.add_argument("spec", help="path to an experiment YAML file")
    train.set_defaults(func=train_command)

    sweep = commands.add_parser(
        "sweep",
        parents=[tracking, running],
        help="search or compare losses with Ray Tune + Optuna; MLflow parent/child runs",
        epilog=RAY_HELP,
    )
    sweep.add_argument("spec", help="path to an experiment YAML file with a sweep section")
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep; finished trials are kept")
    sweep.set_defaults(func=sweep_command)

    report = commands.add_parser(
        "report", parents=[tracking], help="rebuild a sweep's leaderboard and plots from MLflow", epilog=EXIT_STATUS
    )
    report.add_argument("sweep", help="the sweep's name or its MLflow parent run id (or a unique prefix of it)")
    report.add_argument("--no-log", action="store_true", help="print only; do not re-log artifacts to the parent run")
    report.set_defaults(func=report_command)

    reproduce = commands.add_parser(
        "reproduce",
        parents=[tracking, running],
        help="re-run one trial from its MLflow run and compare the metrics",
        epilog=RAY_HELP,
    )
    reproduce.add_argument(
        "run_id", help="the MLflow run id of a trial, or a unique prefix of it (lossweep train, or a sweep's child run)"
    )
    reproduce.add_argument(
        "--tolerance", type=float, default=1e-6, help="largest allowed metric difference (default 1e-6)"
    )
    reproduce.add_argument("--force", action="store_true", help="run even if the data or package versions differ")
    reproduce.set_defaults(func=reproduce_command)

    export = commands.add_parser(
        "export",
        parents=[tracking],
        help="export a sweep's best model as a sentence-transformers folder",
        epilog=EXIT_STATUS,
    )
    export.add_argument("sweep", help="the sweep's name or parent run id (or a trial's run id)")
    export.add_argument("dir", help="an empty or new folder for the model")
    export.add_argument(
        "--no-mlflow", action="store_true", help="do not log the model with MLflow's sentence-transformers flavour"
    )
    export.add_argument(
        "--merge", action="store_true", help="a LoRA trial: fold the adapter into full weights (loads without PEFT)"
    )
    export.set_defaults(func=export_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_loading(getattr(args, "verbose", False))
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
