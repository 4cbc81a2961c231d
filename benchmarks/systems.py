"""The systems under test, each as an HTTP endpoint: the peer subprocess, Corral pipelines, bare Serve.

Each is a context manager that brings the system up, yields a `System`, and takes it down again.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
ARROW_STREAM = "application/vnd.apache.arrow.stream"
PLACEMENTS = ("auto", "inline", "own")
_PLAIN_HEADERS = {"records": {"content-type": "application/json"}, "arrow": {"content-type": ARROW_STREAM}}


@dataclass
class System:
    """An inference endpoint: `headers[fmt]` for fmt in ("records", "arrow").

    The processes that serve it: `pid` for a local process, or the replicas of Serve app `app`
    (plus the Serve proxies).
    """

    name: str
    url: str
    headers: dict[str, dict[str, str]]
    pid: int | None = None
    app: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def local_server(cmd: Sequence[str], port: int, log: Path) -> Iterator[int]:
    """Run server `cmd` until 127.0.0.1:`port` answers GET /health; yield its pid; stop it on exit."""
    if _port_in_use(port):
        raise RuntimeError(f"port {port} is already in use: stop what runs there or pick another port")
    with log.open("wb") as out:
        proc = subprocess.Popen(list(cmd), cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(proc, f"http://127.0.0.1:{port}/health", log)
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextmanager
def peer(workdir: Path, model: bytes, mean: Sequence[float], std: Sequence[float], port: int) -> Iterator[System]:
    """Start `python -m benchmarks.peer` on `port` with `model` (ONNX bytes), stop it on exit."""
    model_path = workdir / "fraud.onnx"
    model_path.write_bytes(model)
    config = workdir / "peer.json"
    config.write_text(json.dumps({"model": str(model_path), "mean": list(mean), "std": list(std)}))
    cmd = [sys.executable, "-m", "benchmarks.peer", "--port", str(port), "--config", str(config)]
    with local_server(cmd, port, workdir / "peer.log") as pid:
        yield System(name="peer", url=f"http://127.0.0.1:{port}/infer", headers=_PLAIN_HEADERS, pid=pid)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 60) -> None:
    name = " ".join(map(str, proc.args)) if isinstance(proc.args, list) else str(proc.args)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not answer {url} within {timeout}s:\n{log.read_text()[-2000:]}")


def _admin_token() -> str:
    from cluster.settings import CorralSettings

    settings = CorralSettings()
    if settings.token:
        return settings.token
    path = settings.admin_token_path
    if not path.exists():
        raise RuntimeError(f"no admin token at {path}: start Corral with `corral up` first, or pass --skip-corral")
    return path.read_text().strip()


def with_placement(spec: dict[str, Any], placement: str) -> dict[str, Any]:
    """A copy of the (single-variant) demo `spec` with `placement` set on every step."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, not {placement!r}")
    return {**spec, "steps": [{**step, "placement": placement} for step in spec["steps"]]}


@contextmanager
def corral(
    base_url: str,
    model: bytes,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    name: str,
    pipeline: str,
    placement: str,
) -> Iterator[System]:
    """Upload the model and deploy the demo spec as `pipeline` on a running Corral, every step with
    `placement`; undeploy it on exit."""
    from benchmarks import serve_cluster
    from cluster.sdk import Client
    from examples.fraud import FEATURES, fraud_pipeline_spec

    serve_cluster.connect()  # to find the replicas' processes; also fails fast without Corral
    token = _admin_token()
    with Client(base_url, token=token) as client:
        info = client.upload_model(pipeline, model, n_features=len(FEATURES))
        model_ref = f"{pipeline}:{info['version']}"
        spec = with_placement(fraud_pipeline_spec(model_ref, mean, std), placement)
        handle = client.pipeline(pipeline, spec)
        auth = {"authorization": f"Bearer {token}"}
        try:
            started = time.monotonic()
            handle.deploy()  # returns once the pipeline answers on its route
            yield System(
                name=name,
                url=f"{base_url.rstrip('/')}/ws/{client.workspace}/v2/models/{pipeline}/infer",
                headers={
                    "records": {"content-type": "application/json; format=pandas-records", **auth},
                    "arrow": {"content-type": ARROW_STREAM, **auth},
                },
                # Corral's Serve app name (deployments.names.app_name).
                app=f"{client.workspace}--{pipeline}",
                notes={"pipeline": pipeline, "placement": placement, "model": model_ref, "deploy_s": _since(started)},
            )
        finally:
            try:
                handle.undeploy()
            except Exception as exc:  # report, but never hide the benchmark's own outcome
                print(f"warning: could not undeploy {pipeline}: {exc}", file=sys.stderr)


@contextmanager
def bare_serve(base_url: str, model: bytes, spec: dict[str, Any], *, in_thread: bool = False) -> Iterator[System]:
    """Deploy benchmarks.bare_serve as Serve app `bench-bare` on Corral's Ray cluster; delete it on exit."""
    from ray import serve

    from benchmarks import bare_serve, serve_cluster

    serve_cluster.connect()
    url = f"{base_url.rstrip('/')}{bare_serve.ROUTE_PREFIX}"
    started = time.monotonic()
    application = bare_serve.application(model, spec, in_thread=in_thread)
    try:
        serve.run(application, name=bare_serve.APP, route_prefix=bare_serve.ROUTE_PREFIX, blocking=False)
        serve_cluster.wait_running(bare_serve.APP)
        _wait_route(url, bare_serve.PROBE_REPLY)  # RUNNING comes before the proxy routes the new prefix
        yield System(
            name="bare-serve",
            url=url,
            headers=_PLAIN_HEADERS,
            app=bare_serve.APP,
            notes={"in_thread": in_thread, "deploy_s": _since(started)},
        )
    finally:
        try:
            serve_cluster.delete(bare_serve.APP)
        except Exception as exc:  # report, but never hide the benchmark's own outcome
            print(f"warning: could not delete Serve app {bare_serve.APP}: {exc}", file=sys.stderr)


@contextmanager
def bare_chain(base_url: str, model: bytes, spec: dict[str, Any]) -> Iterator[System]:
    """Deploy benchmarks.bare_chain as Serve app `bench-bare-chain`; delete it on exit."""
    from ray import serve

    from benchmarks import bare_chain as chain
    from benchmarks import bare_serve, serve_cluster

    serve_cluster.connect()
    url = f"{base_url.rstrip('/')}{chain.ROUTE_PREFIX}"
    started = time.monotonic()
    try:
        serve.run(chain.application(model, spec), name=chain.APP, route_prefix=chain.ROUTE_PREFIX, blocking=False)
        serve_cluster.wait_running(chain.APP)
        _wait_route(url, bare_serve.PROBE_REPLY)
        yield System(
            name="bare-chain", url=url, headers=_PLAIN_HEADERS, app=chain.APP, notes={"deploy_s": _since(started)}
        )
    finally:
        try:
            serve_cluster.delete(chain.APP)
        except Exception as exc:  # report, but never hide the benchmark's own outcome
            print(f"warning: could not delete Serve app {chain.APP}: {exc}", file=sys.stderr)


def _wait_route(url: str, expect: bytes, timeout: float = 120) -> None:
    """Until GET `url` answers `expect`: another app (Corral's control app owns "/") may answer first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(url, timeout=2)
            if reply.status_code == 200 and reply.content == expect:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer {expect!r} within {timeout:.0f} s")


def _since(started: float) -> float:
    return round(time.monotonic() - started, 1)
