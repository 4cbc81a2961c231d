"""The Ray side of the benchmark: a driver on Corral's cluster, Serve apps, and the processes behind them.

Imported only by the systems that run on Ray Serve, so `--systems peer` needs no Ray cluster.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from benchmarks import procs

# Corral's control app (deployments.names.CONTROL_APP); its presence says Corral is up on this cluster.
CORRAL_CONTROL_APP = "corral-control"
# The HTTP proxy actor: `ProxyActor` by default, `HAProxyManager` when Serve runs HAProxy (as `corral up`
# does); the HAProxy processes themselves are not actors and are found by name.
PROXY_ACTOR_CLASSES = frozenset({"ProxyActor", "HAProxyManager"})
CONTROLLER_CLASS = "ServeController"
_REPLICA_PREFIX = "ServeReplica:"  # Serve names replica actor classes ServeReplica:<app>:<deployment>


@dataclass(frozen=True)
class Replica:
    """One Serve replica process."""

    app: str
    deployment: str
    pid: int


def connect() -> None:
    """Join the running Ray cluster as a driver (never starts one); Corral must already be up."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        # address="auto" only joins: without a cluster this raises instead of starting a local one.
        ray.init(address="auto", namespace="corral", log_to_driver=False, logging_level=logging.ERROR)
    # serve.run would start Serve (and its proxy on port 8000) if none were running: refuse instead.
    if CORRAL_CONTROL_APP not in serve.status().applications:
        raise RuntimeError(f"no Corral on this Ray cluster (no Serve app {CORRAL_CONTROL_APP!r}): run `corral up`")


def _alive_actors() -> list[Any]:
    from ray.util.state import list_actors

    return list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=10_000)


def replicas() -> list[Replica]:
    """Every live Serve replica of every app."""
    found = []
    for actor in _alive_actors():
        name = actor.class_name or ""
        if name.startswith(_REPLICA_PREFIX) and actor.pid:
            app, _, deployment = name[len(_REPLICA_PREFIX) :].partition(":")
            found.append(Replica(app, deployment, int(actor.pid)))
    return found


def app_replicas(app: str) -> list[Replica]:
    """The live replicas of Serve app `app`."""
    return [r for r in replicas() if r.app == app]


def proxy_pids() -> list[int]:
    """The processes HTTP requests pass through before a replica: the proxy actor and HAProxy."""
    actors = [int(a.pid) for a in _alive_actors() if a.class_name in PROXY_ACTOR_CLASSES and a.pid]
    return sorted({*actors, *procs.pids_named("haproxy")})


def serve_pids() -> list[int]:
    """Every Serve process: the controller, the proxies and all replicas of all apps."""
    actors = [
        int(a.pid)
        for a in _alive_actors()
        if a.pid and (a.class_name == CONTROLLER_CLASS or (a.class_name or "").startswith(_REPLICA_PREFIX))
    ]
    return sorted({*actors, *proxy_pids()})


def memory(app: str) -> dict[str, Any]:
    """Resident memory of the replicas of `app`: total, per deployment, and the replica count."""
    by_deployment: dict[str, int] = defaultdict(int)
    found = app_replicas(app)
    for replica in found:
        by_deployment[replica.deployment] += procs.rss_bytes(replica.pid) or 0
    return {
        "app": app,
        "replicas": len(found),
        "rss_mb": round(sum(by_deployment.values()) / 2**20, 1),
        "by_deployment_mb": {name: round(rss / 2**20, 1) for name, rss in sorted(by_deployment.items())},
    }


def apps_memory() -> dict[str, dict[str, Any]]:
    """RSS and replica count of every Serve app, plus the proxies: what the cluster holds besides one app."""
    by_app: dict[str, list[int]] = defaultdict(list)
    for replica in replicas():
        by_app[replica.app].append(replica.pid)
    out = {app: _rss_summary(pids) for app, pids in sorted(by_app.items())}
    out["(proxies)"] = _rss_summary(proxy_pids())
    return out


def _rss_summary(pids: list[int]) -> dict[str, Any]:
    total = sum(procs.rss_bytes(pid) or 0 for pid in pids)
    return {"processes": len(pids), "rss_mb": round(total / 2**20, 1)}


def wait_running(app: str, timeout_s: float = 300) -> None:
    """Poll serve.status() until `app` is RUNNING; a failed deploy raises with Serve's message.

    Polling, not a blocking serve.run: with HAProxy a blocking run returns ~30 s after the app is up.
    """
    from ray import serve

    deadline = time.monotonic() + timeout_s
    status = "unknown"
    while time.monotonic() < deadline:
        overview = serve.status().applications.get(app)
        if overview is not None:
            status = str(getattr(overview.status, "value", overview.status))
            if status == "RUNNING":
                return
            if status in ("DEPLOY_FAILED", "UNHEALTHY"):
                details = "; ".join(f"{name}: {d.message}" for name, d in overview.deployments.items() if d.message)
                raise RuntimeError(f"Serve app {app} is {status}: {overview.message} {details}"[:3000])
        time.sleep(0.25)
    raise RuntimeError(f"Serve app {app} was not RUNNING within {timeout_s:.0f} s (last status: {status})")


def delete(app: str) -> None:
    """Remove Serve app `app` (and wait until it is gone)."""
    from ray import serve

    serve.delete(app)
