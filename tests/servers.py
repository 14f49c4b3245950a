"""Real servers that tests start on 127.0.0.1 and stop again: an S3-protocol store (moto), PostgreSQL,
an MLflow tracking server on them, and Ray nodes. Each is a context manager."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ray

BUCKET = "lossweep-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what}: not within {timeout:.0f}s\n{tail}")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # it answers, if only to refuse
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@dataclass
class S3:
    endpoint: str

    @property
    def env(self) -> dict[str, str]:
        """What a client needs: pyarrow (Ray, lossweep) and boto3 (MLflow) both read these."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
        }

    def keys(self, prefix: str = "") -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, **_credentials(self.env))
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _credentials(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


@contextlib.contextmanager
def s3_server(log_dir: Path) -> Iterator[S3]:
    """moto's standalone S3 server with one bucket, BUCKET."""
    import boto3

    port = free_port()
    log = log_dir / "moto.log"
    process = subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        s3 = S3(f"http://127.0.0.1:{port}")
        wait_for(lambda: answers(s3.endpoint), 60, "the S3 server", log)
        boto3.client("s3", endpoint_url=s3.endpoint, **_credentials(s3.env)).create_bucket(Bucket=BUCKET)
        yield s3
    finally:
        _stop(process)


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise AssertionError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")
    return found[-1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields the URI of its database `mlflow`.

    PostgreSQL refuses to run as root: as root, it runs as the `postgres` user the package creates."""
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    data = root / "data"
    subprocess.run(
        as_user + [_postgres_bin("initdb"), "-D", str(data), "-U", "lossweep", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = root / "postgres.log"
    process = subprocess.Popen(
        as_user + [_postgres_bin("postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def ready() -> bool:
            try:
                psycopg.connect(host="127.0.0.1", port=port, user="lossweep", dbname="postgres").close()
                return True
            except psycopg.OperationalError:
                return False

        wait_for(ready, 60, "PostgreSQL", log)
        with psycopg.connect(host="127.0.0.1", port=port, user="lossweep", dbname="postgres", autocommit=True) as db:
            db.execute("CREATE DATABASE mlflow")
        yield f"postgresql://lossweep@127.0.0.1:{port}/mlflow"
    finally:
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(command: str, backend: str, artifacts: str, env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """Run `command` (an `mlflow server ...` line, e.g. cluster.yaml's, on its own port) with the store
    at `backend` and artifacts proxied to `artifacts` (the environment variables `mlflow server`
    reads); yields its URL on 127.0.0.1. Ray nodes on this machine reach it at the machine's address,
    as a cluster's nodes reach the head's server."""
    port = free_port()
    log = log_dir / "mlflow-server.log"
    argv = shlex.split(command)
    argv[argv.index("--port") + 1] = str(port)
    # One process: uvicorn's supervisor restarts worker processes that miss its 5 s health ping,
    # which they do on 2 busy cores; one process serves every client of the test.
    argv += ["--workers", "1"]
    store = {"MLFLOW_BACKEND_STORE_URI": backend, "MLFLOW_ARTIFACTS_DESTINATION": artifacts}
    # MLflow answers private addresses (10.*, 172.16-31.*, 192.168.*, a cluster's) and localhost; this
    # machine's address may be neither.
    store["MLFLOW_SERVER_ALLOWED_HOSTS"] = f"localhost:*,127.0.0.1:*,{ray.util.get_node_ip_address()}:*"
    process = subprocess.Popen(
        argv,
        env=dict(os.environ, **env, **store),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # Creating the tables and importing the app take ~40 s on 2 idle cores, minutes on busy ones.
        wait_for(lambda: answers(f"{url}/health"), 360, "the MLflow server", log)
        yield url
    finally:
        _stop(process)


class RayCluster:
    """Ray nodes on this machine (`ray start --block`, each in its own process group), one head."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.nodes = root, {}
        self.env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), **env)
        self.env.pop("RAY_ADDRESS", None)
        self.temp_dir = tempfile.mkdtemp(prefix="rayc-", dir="/tmp")  # short: Ray's unix sockets live here
        self.temp_dirs = [self.temp_dir]
        self.gcs_port, self.dashboard_port = free_port(), free_port()

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_head(self, cpus: float) -> None:
        self._start(
            "head",
            [
                "--head",
                f"--port={self.gcs_port}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--temp-dir={self.temp_dir}",
            ],
            cpus,
        )
        wait_for(lambda: answers(f"{self.dashboard}/api/version"), 120, "the Ray head", self.root / "head.log")

    def add_node(self, name: str, cpus: float) -> None:
        # Its own temp dir, as on a machine of its own: nodes sharing one unpack the job's working_dir
        # into the same folder, and a second unpack replaces the folder the job's driver runs in.
        temp_dir = tempfile.mkdtemp(prefix="rayn-", dir="/tmp")
        self.temp_dirs.append(temp_dir)
        self._start(name, [f"--address=127.0.0.1:{self.gcs_port}", f"--temp-dir={temp_dir}"], cpus)

    def _start(self, name: str, args: list[str], cpus: float, attempts: int = 3) -> None:
        """`ray start --block` until the node is up: on busy cores a raylet can miss the 30 s that
        `ray start` waits for it to register, and then `ray start` exits; that attempt is cleaned up."""
        log = self.root / f"{name}.log"
        for _ in range(attempts):
            process = self._launch(name, args, cpus)
            wait_for(lambda p=process: p.poll() is not None or "Ray runtime started" in log.read_text(), 180, name, log)
            if process.poll() is None:
                self.nodes[name] = process
                return
            self._kill_session(process)
        raise AssertionError(f"{name}: ray start failed {attempts} times\n{log.read_text()[-3000:]}")

    def _launch(self, name: str, args: list[str], cpus: float) -> subprocess.Popen:
        return subprocess.Popen(
            [
                "ray",
                "start",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={cpus}",
                "--disable-usage-stats",
                # Each node its own ports: several nodes (and other Rays) share this machine.
                f"--node-manager-port={free_port()}",
                f"--object-manager-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}",
                *args,
            ],
            env=self.env,
            stdout=(self.root / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        """The node dies at once with everything it runs (its raylet and its workers)."""
        self._kill_session(self.nodes.pop(name))

    def stop(self) -> None:
        for name in list(self.nodes)[::-1]:
            self._kill_session(self.nodes.pop(name))
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)

    @staticmethod
    def _kill_session(process: subprocess.Popen) -> None:
        for pid in _session_pids(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=30)


def _session_pids(session: int) -> list[int]:
    """Every process of a session (ray start and what it started), by `ps -o sid`."""
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    return [int(pid) for pid, sid in (line.split() for line in out.splitlines()) if int(sid) == session]
