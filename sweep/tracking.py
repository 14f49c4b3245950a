"""MLflow: one run per trial, with the resolved spec as params, provenance tags and the spec file.

The default store is a SQLite file in the working directory (no server needed); a spec field,
`--tracking-uri` or `MLFLOW_TRACKING_URI` points at a real server. Credentials stay in the
environment (MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN): they are never logged.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import mlflow
import yaml
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .protocol import Tag

PACKAGES = ("lossweep", "torch", "sentence-transformers", "transformers", "datasets", "ray", "mlflow", "optuna")
MAX_BATCH = 900  # MLflow accepts up to 1000 metrics per log_batch call


def default_tracking_uri() -> str:
    """A SQLite store in the working directory, as an absolute URI so Ray workers find the same file."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def resolve_tracking_uri(spec_uri: str | None, override: str | None = None) -> str:
    return override or os.environ.get("MLFLOW_TRACKING_URI") or spec_uri or default_tracking_uri()


def worker_tracking_uri(uri: str) -> str:
    """The tracking URI as Ray workers on other machines must see it; call it on the driver.

    A server the driver reaches at localhost runs on the driver's machine; workers reach it at the
    address that machine's Ray node has in the cluster (what `ray start --node-ip-address` set).
    (A SQLite file is only reachable where the file is: use a server on clusters.)
    """
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and parts.hostname in ("127.0.0.1", "localhost"):
        import ray

        if ray.is_initialized():
            netloc = parts.netloc.replace(parts.hostname, _node_address(ray), 1)
            return urlunsplit(parts._replace(netloc=netloc))
    return uri


def _node_address(ray) -> str:
    """This process's Ray node's address in the cluster (not the machine's first interface)."""
    node_id = ray.get_runtime_context().get_node_id()
    return next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)


def local_artifact_root(uri: str) -> str | None:
    """For a SQLite store, artifacts in `mlartifacts/` beside the database file.

    MLflow's default is `./mlruns` relative to the working directory at creation time, which under
    `ray job submit` is a temporary copy of the working dir that Ray deletes: runs would lose their
    artifacts. A server store keeps its own artifact root (None).
    """
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///")).expanduser()
        return (database.resolve().parent / "mlartifacts").as_uri()
    return None


def redact(uri: str) -> str:
    """A URI without any user:password part, safe to log."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested spec data as MLflow params: dotted names, lists by index, values as JSON text."""
    out: dict[str, str] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, (list, tuple)) and any(isinstance(v, Mapping) for v in data):
        for i, value in enumerate(data):
            out |= flatten(value, f"{prefix}.{i}")
    else:
        out[prefix] = data if isinstance(data, str) else json.dumps(data)
    return out


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(cwd: Path | None = None) -> tuple[str, bool]:
    """(commit, dirty) of the repository the command runs in; ('unknown', False) outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        )
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


@dataclass(frozen=True)
class DataInput:
    """A data set a run trained or was evaluated on, as MLflow records dataset inputs."""

    name: str
    digest: str  # our content fingerprint
    source: str  # a local path, or hf://datasets/<id>
    context: str  # training | evaluation

    def entity(self) -> DatasetInput:
        kind = "hugging_face" if self.source.startswith("hf://") else "local"
        source = json.dumps(
            {"path": self.source.removeprefix("hf://datasets/")} if kind == "hugging_face" else {"uri": self.source}
        )
        dataset = Dataset(name=self.name, digest=self.digest, source_type=kind, source=source)
        return DatasetInput(dataset=dataset, tags=[InputTag(key="mlflow.data.context", value=self.context)])


GIT_COMMIT_ENV, GIT_DIRTY_ENV = "LOSSWEEP_GIT_COMMIT", "LOSSWEEP_GIT_DIRTY"


def source_commit() -> tuple[str, bool]:
    """(commit, dirty) of the checkout lossweep's own code runs from (an editable install); ('unknown',
    False) for an installed copy, even one inside some other git repository."""
    here = Path(__file__).resolve()
    try:
        subprocess.run(
            ["git", "ls-files", "--error-unmatch", here.name],
            cwd=here.parent,
            capture_output=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return git_commit(here.parent)


@dataclass(frozen=True)
class Provenance:
    """Where a command's runs came from: the checkout it was started in (commit, uncommitted changes),
    the checkout of lossweep's own code when it runs from one, and the package versions. Read once on
    the driver and handed to every run it creates, wherever that run is created (a Tune trial actor
    runs in Ray's own folder, not in the checkout)."""

    commit: str
    dirty: bool
    versions: dict[str, str]
    source: str = "unknown"  # lossweep's own commit
    source_dirty: bool = False

    @classmethod
    def here(cls) -> Provenance:
        """This process's: LOSSWEEP_GIT_COMMIT / LOSSWEEP_GIT_DIRTY when set (a job whose working-dir
        copy left `.git` out passes them), else the git checkout of the working directory; and the
        checkout lossweep's code is installed from."""
        commit, dirty = os.environ.get(GIT_COMMIT_ENV), os.environ.get(GIT_DIRTY_ENV, "false").lower() == "true"
        if not commit:
            commit, dirty = git_commit()
        source, source_dirty = source_commit()
        return cls(commit, dirty, package_versions(), source, source_dirty)

    def tags(self, spec_hash: str, data_fingerprint: str) -> dict[str, str]:
        tags = {
            "mlflow.source.git.commit": self.commit if self.commit != "unknown" else self.source,
            Tag.GIT_COMMIT: self.commit,
            Tag.GIT_DIRTY: str(self.dirty).lower(),
            Tag.SOURCE_COMMIT: self.source,
            Tag.SOURCE_DIRTY: str(self.source_dirty).lower(),
            Tag.SPEC_HASH: spec_hash,
            Tag.DATA_FINGERPRINT: data_fingerprint,
        }
        return tags | {f"{Tag.VERSION}{name}": version for name, version in self.versions.items()}


class RunNotFound(LookupError):
    """No run (or more than one) matches an id or id prefix; the message says where it looked."""


RUN_ID = re.compile(r"[0-9a-f]{1,32}")


class Tracker:
    """The MLflow calls lossweep makes, against one tracking store."""

    def __init__(self, tracking_uri: str) -> None:
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri)

    def experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        # Model training, not GenAI: the MLflow UI then opens on the runs table, parents and children.
        tags = {"mlflow.experimentKind": "custom_model_development"}
        return self.client.create_experiment(name, artifact_location=local_artifact_root(self.uri), tags=tags)

    def start_run(
        self,
        experiment: str,
        run_name: str,
        params: Mapping[str, str],
        tags: Mapping[str, str],
        spec_data: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        tags = dict(tags)
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name, tags=tags)
        run_id = run.info.run_id
        items = [Param(key, str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])
        if spec_data is not None:
            self.client.log_text(run_id, yaml.safe_dump(dict(spec_data), sort_keys=False), "spec.yaml")
        return run_id

    def find_child(self, parent_run_id: str, trial_id: str) -> str | None:
        """The child run a Tune trial already created (so a resumed trial continues it)."""
        parent = self.client.get_run(parent_run_id)
        runs = self.client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{Tag.TRIAL_ID}` = '{trial_id}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def find_run(self, run_id: str):
        """A run by its id or a unique prefix of it (as people copy them: `66fd08a0`)."""
        if not RUN_ID.fullmatch(run_id):
            raise RunNotFound(f"{run_id!r} is not a run id (hexadecimal, as MLflow shows them)")
        if len(run_id) == 32:
            try:
                return self.client.get_run(run_id)
            except MlflowException:
                raise RunNotFound(f"no run {run_id} in {redact(self.uri)}; check the id or --tracking-uri") from None
        experiments = [e.experiment_id for e in self.client.search_experiments(view_type=ViewType.ALL)]
        matches, token = [], None
        while experiments:
            page = self.client.search_runs(experiments, run_view_type=ViewType.ALL, max_results=1000, page_token=token)
            matches += [run for run in page if run.info.run_id.startswith(run_id)]
            token = page.token
            if not token:
                break
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunNotFound(f"no run whose id starts {run_id} in {redact(self.uri)}; check the id or --tracking-uri")
        ids = ", ".join(run.info.run_id for run in matches[:5])
        raise RunNotFound(f"{len(matches)} runs have ids starting {run_id} ({ids}); give more of the id")

    def children(self, parent_run_id: str) -> list:
        """Every child run of a parent run, oldest first."""
        parent = self.client.get_run(parent_run_id)
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [parent.info.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                order_by=["attributes.start_time ASC"],
                max_results=500,
                page_token=token,
            )
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(items), MAX_BATCH):
            self.client.log_batch(run_id, metrics=items[start : start + MAX_BATCH])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_inputs(self, run_id: str, inputs: list[DataInput]) -> None:
        """Record the data sets a run used (the UI's Dataset column and filters)."""
        if inputs:
            self.client.log_inputs(run_id, datasets=[data.entity() for data in inputs])

    def log_dict(self, run_id: str, data: Any, path: str) -> None:
        self.client.log_dict(run_id, data, path)

    def read_dict(self, run_id: str, path: str) -> Any:
        """A JSON artifact of a run, or None when the run has none at `path`. A store that cannot be
        reached raises: a network error must not read as a missing file."""
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run_id, path, tmp)
            except MlflowException as error:
                if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None  # the run holds nothing at that path (a local store and a server both say so)
                raise
            except FileNotFoundError:
                return None
            return json.loads(Path(local).read_text())

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def links(self, run_id: str) -> list[str]:
        """Where to look at a run in the MLflow UI: its page, and its experiment's runs (a sweep's
        parent run with its trials nested under it). A local store needs `mlflow ui` first."""
        experiment = self.client.get_run(run_id).info.experiment_id
        if self.uri.startswith(("http://", "https://")):
            base, lines = redact(self.uri).rstrip("/"), []
        else:
            base = "http://127.0.0.1:5000"
            lines = [f"MLflow UI: mlflow ui --backend-store-uri {redact(self.uri)} --host 127.0.0.1 --port 5000, then"]
        # MLflow 3 remembers one UI mode per browser and starts in GenAI; the parameter picks model training.
        mode = "workflowType=machine_learning"
        return lines + [
            f"  runs:       {base}/#/experiments/{experiment}/runs?{mode}",
            f"  this run:   {base}/#/experiments/{experiment}/runs/{run_id}?{mode}",
        ]

    def run_url(self, run_id: str) -> str:
        run = self.client.get_run(run_id)
        if self.uri.startswith(("http://", "https://")):
            return f"{redact(self.uri).rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
        store = redact(self.uri)
        experiment = run.info.experiment_id
        return f"run {run_id} in experiment {experiment} of {store} (browse: mlflow ui --backend-store-uri {store})"


@contextmanager
def environment(**variables: str) -> Iterator[None]:
    """Set environment variables for a block (and the processes started in it), then put them back."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def active_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (which the model flavours use) at `uri` for a block, then put it back.

    `mlflow.set_tracking_uri` also sets MLFLOW_TRACKING_URI for subprocesses; left behind, both would
    redirect every later run of this process. Afterwards MLflow follows MLFLOW_TRACKING_URI (restored
    as it was) and its default again: `set_tracking_uri(None)` unsets the URI, and lossweep sets it
    nowhere else.
    """
    with environment(MLFLOW_TRACKING_URI=uri):
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(None)
