"""Shared by the benchmarks: repetitions, median and range, a printed table, a JSON result file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = Path(os.environ.get("LOSSWEEP_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs (numbers meaningless)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions per measurement (default 3)")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/<name>.json)")
    return p


def parse_or_run_child(p: argparse.ArgumentParser, child: Callable[..., None]) -> argparse.Namespace | None:
    """Parse the arguments; `--child A B ...` (one measurement in a fresh process) runs child(A, B, ...)
    instead and returns None."""
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return None
    return args


def run_child(script: str, *args: str) -> str:
    """Run `python script --child args...`; its stdout, or its stderr in the error if it fails."""
    result = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(script).name} --child {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def mnrl_spec(name: str, root: Path, model: str, seq: int, training: dict, resources: dict) -> dict:
    """A one-trial spec: MultipleNegativesRankingLoss on Cranfield's training pairs, no evaluation."""
    return {
        "name": name,
        "data_dir": str(DATA_DIR),
        "model": model,
        "max_seq_length": seq,
        "train": {"path": "cranfield", "split": "train"},
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": training,
        "evaluation": {"at_start": False},
        "resources": resources,
        "output_dir": str(root / "runs"),
        "mlflow": {"experiment": name, "tracking_uri": f"sqlite:///{root}/mlflow.db"},
    }


def lossweep_train(spec: dict, root: Path) -> tuple[float, float, list]:
    """Runs `lossweep train` on `spec` as a user does; (start, wall seconds, `train/loss` history by step)."""
    import yaml
    from mlflow.tracking import MlflowClient

    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    command = Path(sys.executable).with_name("lossweep")  # this environment's console script
    start = time.time()
    done = subprocess.run(
        [str(command) if command.exists() else "lossweep", "train", str(path)], capture_output=True, text=True, cwd=root
    )
    wall = time.time() - start
    if done.returncode != 0:
        raise RuntimeError(f"lossweep train failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    client = MlflowClient(spec["mlflow"]["tracking_uri"])
    run = client.search_runs([client.get_experiment_by_name(spec["mlflow"]["experiment"]).experiment_id])[0]
    history = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
    return start, wall, history


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def repeat(fn: Callable[[], float], repeats: int) -> dict[str, float]:
    return summary([fn() for _ in range(repeats)])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def machine() -> dict[str, Any]:
    versions = {}
    for name in ("torch", "sentence-transformers", "ray", "mlflow", "optuna"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


def fmt(s: dict[str, float], unit: str = "", digits: int = 3) -> str:
    return f"{s['median']:.{digits}f}{unit} [{s['min']:.{digits}f}..{s['max']:.{digits}f}]"


def write(name: str, result: dict[str, Any], out: Path | None, smoke: bool) -> Path:
    """Write the JSON result; smoke runs go to a .smoke.json file so they never replace real results."""
    path = out or RESULTS / f"{name}{'.smoke' if smoke else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "smoke": smoke,
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        **result,
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nwrote {path}")
    return path


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
