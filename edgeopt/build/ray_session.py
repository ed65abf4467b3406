"""Ray itself for a build matrix: start a local one or join a running cluster, and stop or leave it
(``--ray local|auto``); the cells sent to it are :mod:`edgeopt.build.ray_cells`'. Ray is optional
(``pip install 'edgeopt[ray]'``) and imported only here, only when ``--ray`` is given."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from edgeopt.errors import ConfigError, RemoteError

MODES = ("local", "auto")


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--ray needs Ray, which is not installed ({exc.name or exc})",
                          "install the extra: pip install 'edgeopt[ray]' -c constraints.txt") from exc
    return ray


@contextmanager
def ray_session(mode: str, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray for the duration of the block: ``local`` starts one on this machine (all its CPUs unless
    ``num_cpus``; loopback, no dashboard, no usage report) and stops it after; ``auto`` joins the running
    cluster (``RAY_ADDRESS`` or the one started with ``ray start``) and only disconnects."""
    if mode not in MODES:
        raise ConfigError(f"--ray {mode!r}: allowed {', '.join(MODES)}")
    ray = import_ray()
    if ray.is_initialized():  # the caller's own session (a test, a notebook): use it, leave it running
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    on_term = signal.getsignal(signal.SIGTERM)
    if mode == "local":
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR, _node_ip_address="127.0.0.1")
    else:
        address = os.environ.get("RAY_ADDRESS")
        check_address(address)
        try:
            ray.init(address="auto", log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError) as exc:
            where = f"at RAY_ADDRESS={address}" if address else "on this machine"
            reason = " ".join(str(exc).split())[:200]
            if "auth" in reason.lower():
                raise RemoteError(f"--ray auto: the Ray cluster {where} refused this driver ({reason})",
                                  "a cluster started with token authentication needs it here too: export "
                                  "RAY_AUTH_MODE=token (docs/scale.md)") from exc
            raise RemoteError(f"--ray auto: no running Ray cluster found {where}",
                              "start one (`ray start --head` here, `ray start --address HEAD:6379` on the "
                              "workers; docs/scale.md) or use --ray local") from exc
    if threading.current_thread() is threading.main_thread():  # Ray's own SIGTERM handler dumps a stack trace
        signal.signal(signal.SIGTERM, on_term)
    stdout, sys.stdout = sys.stdout, sys.stderr  # Ray prints its raylet's messages to stdout: keep --json clean
    try:
        yield ray
    finally:
        try:
            if mode == "local":
                stop_autoscaler_monitor(ray)
            ray.shutdown()
        finally:
            sys.stdout = stdout


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """``RAY_ADDRESS=host:port`` with nothing listening there is said at once: Ray itself retries for minutes."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    if not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise RemoteError(f"--ray auto: nothing answers at RAY_ADDRESS={address} "
                          f"({exc.strerror or type(exc).__name__})",
                          "start the cluster there (`ray start --head --port PORT`), fix RAY_ADDRESS, or use "
                          "--ray local") from exc


# --- a local Ray's start and stop ---------------------------------------------------------------------------
def stop_autoscaler_monitor(ray: Any) -> None:
    """Stop the local cluster's autoscaler monitor before ``ray.shutdown()``, which stops the GCS first: the
    monitor's SIGTERM handler then tries to report to the gone GCS and is killed after a 1 s grace period (Ray
    2.60; measured: 1.0 s of a 1.1-1.4 s shutdown). The monitor of a fixed local cluster scales nothing; killing it
    is what Ray does after that second anyway. Private API, so any surprise leaves it to ``ray.shutdown()``."""
    try:
        node = ray._private.worker._global_node  # noqa: SLF001
        for info in node.all_processes.get(ray._private.ray_constants.PROCESS_TYPE_MONITOR, []):  # noqa: SLF001
            if info.process.poll() is None:
                info.process.kill()
                info.process.wait(timeout=1)
    except Exception:  # noqa: BLE001 - ray.shutdown() stops it the slow way
        pass
