"""The systems under test: the peer subprocess and a Corral pipeline, each as an HTTP endpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
ARROW_STREAM = "application/vnd.apache.arrow.stream"
PIPELINE = "bench-fraud"


@dataclass
class System:
    """An inference endpoint: `headers[fmt]` for fmt in ("records", "arrow"); `pid` if local."""

    name: str
    url: str
    headers: dict[str, dict[str, str]]
    pid: int | None = None
    notes: dict[str, str] = field(default_factory=dict)


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
        yield System(
            name="peer",
            url=f"http://127.0.0.1:{port}/infer",
            headers={
                "records": {"content-type": "application/json"},
                "arrow": {"content-type": ARROW_STREAM},
            },
            pid=pid,
        )


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


@contextmanager
def corral(base_url: str, model: bytes, mean: Sequence[float], std: Sequence[float]) -> Iterator[System]:
    """Upload the model and deploy pipeline `bench-fraud` on a running Corral; undeploy it on exit."""
    from cluster.sdk import Client
    from examples.fraud import fraud_pipeline_spec

    token = _admin_token()
    with Client(base_url, token=token) as client:
        info = client.upload_model(PIPELINE, model, n_features=6)
        model_ref = f"{PIPELINE}:{info['version']}"
        pipeline = client.pipeline(PIPELINE, fraud_pipeline_spec(model_ref, mean, std))
        started = time.monotonic()
        pipeline.deploy()
        auth = {"authorization": f"Bearer {token}"}
        try:
            yield System(
                name="corral",
                url=f"{base_url.rstrip('/')}/ws/{client.workspace}/v2/models/{PIPELINE}/infer",
                headers={
                    "records": {"content-type": "application/json; format=pandas-records", **auth},
                    "arrow": {"content-type": ARROW_STREAM, **auth},
                },
                notes={"model": model_ref, "deploy_s": f"{time.monotonic() - started:.1f}"},
            )
        finally:
            try:
                pipeline.undeploy()
            except Exception as exc:  # report, but never hide the benchmark's own outcome
                print(f"warning: could not undeploy {PIPELINE}: {exc}", file=sys.stderr)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by process `pid` (Linux), None if unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
