"""Ray for lossweep: join the cluster a user points at, else start a local one bound to 127.0.0.1."""

from __future__ import annotations

import logging
import os
import socket

import ray

# No public API reads the address `ray start` leaves on this machine (`ray.init` only acts on it).
from ray._private.utils import read_ray_address

from .tracking import environment

log = logging.getLogger(__name__)


def ensure_ray(num_cpus: int | None = None):
    """Join the cluster named by RAY_ADDRESS (or started here with `ray start`), else start a local
    Ray (of `num_cpus` CPUs, default all) that listens on 127.0.0.1 only: its dashboard, GCS and
    raylet are not reachable from outside."""
    if ray.is_initialized():
        return None
    if os.environ.get("RAY_ADDRESS") or _started_cluster_answers():
        return ray.init(log_to_driver=True, configure_logging=False)
    # One local node has no preemption to watch for; Ray Train's watcher would only log an internal warning.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    port = _free_port()
    # Ray's state API, which Ray Train's placement-group cleaner calls from inside the cluster, finds a
    # local Ray by looking for GCS processes and gives up if this machine runs two; a trial stopped
    # early would then keep its CPUs. The processes started here learn this Ray's API address.
    with environment(RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{port}"):
        return ray.init(
            address="local",
            num_cpus=num_cpus,
            dashboard_host="127.0.0.1",
            dashboard_port=port,
            # Private, and kept: the only way to bind the local node (raylet, object store) to loopback;
            # without it Ray takes the first interface's address and listens on it.
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
            configure_logging=False,
        )


def joins_cluster() -> bool:
    """Whether `ensure_ray` would join a cluster (RAY_ADDRESS, or one `ray start` began here that still
    answers) rather than start a Ray of its own."""
    return bool(os.environ.get("RAY_ADDRESS")) or _started_cluster_answers()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _started_cluster_answers() -> bool:
    """Whether `ray start` left an address on this machine and its GCS still answers.

    `ray start --block` ended by a signal leaves `/tmp/ray/ray_current_cluster` behind; joining that
    dead address would hang, so a stale file is reported and a local Ray is started instead.
    """
    address = read_ray_address(None)
    if not address:
        return False
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except (OSError, ValueError):
        log.warning("ignoring %s from an earlier `ray start` (nothing answers there); starting a local Ray", address)
        return False
