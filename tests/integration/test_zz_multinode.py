"""Several Ray nodes on this machine: a CPU worker and GPU workers join the session's head with
`ray start --address`. A GPU step gets its own deployment on a GPU node, its router and inline steps
stay on CPU nodes; the GPU node dies under load (its raylet and every process under it SIGKILLed)
and the step comes back on another GPU node, with failures only in flight and nothing lost; then
the CPU worker dies, and a router with it: failures only in flight, at most its last log flush lost.

The GPU workers carry the resource `accelerator_type:T4` (what Ray puts on a real T4 node), and the
step asks for that accelerator type: so it can only land on them, whatever GPUs the head has.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deployments.names import ROUTER_DEPLOYMENT, app_name, step_deployment_name
from tests.integration.faults import (
    Load,
    assert_only_the_last_flush_lost,
    back_within,
    in_flight_only,
    logged_ids,
    summary,
)
from tests.integration.helpers import scale_model, upload

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BACK_WITHIN_S = 15.0
RECORDS = {"content-type": "application/json; format=pandas-records"}
ACCELERATOR = "T4"


@dataclass(frozen=True)
class Node:
    name: str
    node_id: str
    raylet_port: int


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _raylet_pid(port: int) -> int | None:
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"/raylet") and f"--node_manager_port={port}".encode() in cmdline:
            return int(proc.name)
    return None


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def kill_node(node: Node) -> float:
    """A node crash: SIGKILL its raylet and every process under it (workers, agents) at once."""
    pid = _raylet_pid(node.raylet_port)
    assert pid is not None, f"no raylet for node {node.name}"
    processes = _descendants(pid)
    for each in processes:
        os.kill(each, signal.SIGSTOP)  # freeze first, so none outlives the others
    killed_at = time.monotonic()
    for each in processes:
        os.kill(each, signal.SIGKILL)
    return killed_at


def _live_node_with(resource: str) -> str | None:
    import ray

    for node in ray.nodes():
        if node["Alive"] and resource in node["Resources"]:
            return str(node["NodeID"])
    return None


@pytest.fixture(scope="module")
def join(corral: Any) -> Iterator[Callable[..., Node]]:
    """`join(name, cpus, gpus, accelerator)` starts a worker node on this machine; all go at the end."""
    import ray

    from cluster import lifecycle

    address = ray.get_runtime_context().gcs_address
    started: list[Node] = []

    def start(name: str, cpus: int, gpus: int = 0, accelerator: str | None = None) -> Node:
        marker = f"corral_test_{name}"
        resources = {marker: 1, **({f"accelerator_type:{accelerator}": 1} if accelerator else {})}
        port = _free_port()
        ports = ["--metrics-export-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                 "--runtime-env-agent-port"]  # fmt: skip
        result = subprocess.run(
            [lifecycle._ray_bin(), "start", f"--address={address}", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
             f"--resources={json.dumps(resources)}", f"--node-manager-port={port}",
             *(f"{option}={_free_port()}" for option in ports)],
            capture_output=True, text=True, timeout=120, env=dict(os.environ, **lifecycle.RAY_PROCESS_ENV),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 60
        while (node_id := _live_node_with(marker)) is None:
            assert time.monotonic() < deadline, f"node {name} did not join"
            time.sleep(0.5)
        node = Node(name, node_id, port)
        started.append(node)
        return node

    yield start
    for node in started:
        if _raylet_pid(node.raylet_port) is not None:
            kill_node(node)


def _replica_nodes(app: str, deployment: str) -> list[str]:
    from ray.util.state import list_actors

    actors = list_actors(
        filters=[("class_name", "=", f"ServeReplica:{app}:{deployment}"), ("state", "=", "ALIVE")], limit=1000
    )
    return sorted(str(a.node_id) for a in actors)


def _wait_replicas(app: str, deployment: str, placed: Callable[[list[str]], bool], timeout_s: float = 120) -> None:
    """Until the nodes of `deployment`'s live replicas (sorted node ids) are as `placed` wants."""
    deadline = time.monotonic() + timeout_s
    while not placed(nodes := _replica_nodes(app, deployment)):
        assert time.monotonic() < deadline, f"{deployment} is still on {nodes}"
        time.sleep(0.5)


def _wait_running(pipeline: Any, killed_at: float, timeout_s: float = 60) -> dict[str, Any]:
    """Until the pipeline reports `running` again; returns that status.

    A replica whose node died leaves its deployment UNHEALTHY in Serve until the replacement has
    passed its first health check, which comes a little after its actor is alive.
    """
    deadline = time.monotonic() + timeout_s
    while (status := pipeline.status())["status"] != "running":
        assert time.monotonic() < deadline, f"the pipeline is still {status['status']} after {timeout_s:.0f} s"
        time.sleep(0.5)
    print(f"FAULT status running again {time.monotonic() - killed_at:.1f} s after the kill")
    return status


def test_gpu_step_on_a_gpu_node_survives_that_node_dying_under_load_and_routers_a_cpu_node_dying(
    corral: Any, admin: Any, admin_headers: dict[str, str], join: Callable[..., Node], tmp_path: Path
) -> None:
    import ray

    cpu = join("cpu", cpus=4)
    gpu_a = join("gpu_a", cpus=0, gpus=1, accelerator=ACCELERATOR)  # no CPUs: no CPU work can land
    model = upload(admin, "multinode-model", scale_model(3.0), tmp_path)
    spec = {
        "steps": [
            {"name": "pre", "python": "pipelines.builtin:Select", "config": {"columns": ["x"]},
             "resources": {"num_cpus": 0.1}},
            {"name": "model", "model": model, "columns": ["x"],
             "resources": {"num_cpus": 0, "num_gpus": 1, "accelerator_type": ACCELERATOR}},
        ],
        "router": {"num_cpus": 0.1, "autoscaling": {"min_replicas": 2, "max_replicas": 2}},
    }  # fmt: skip
    pipeline = admin.pipeline("multinode", spec)
    pipeline.deploy()
    try:
        app = app_name("default", "multinode")
        gpu_step = step_deployment_name("main", "model")
        assert _replica_nodes(app, gpu_step) == [gpu_a.node_id]  # `auto`: a GPU step gets its own deployment
        routers = _replica_nodes(app, ROUTER_DEPLOYMENT)  # the inline `pre` step runs in them
        assert len(routers) == 2 and gpu_a.node_id not in routers, routers
        cpu_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")}
        assert set(routers) <= cpu_nodes, (routers, cpu_nodes)
        print(f"MULTINODE routers on {sorted(set(routers))}; cpu worker {cpu.node_id}; gpu step on {gpu_a.node_id}")

        gpu_b = join("gpu_b", cpus=0, gpus=1, accelerator=ACCELERATOR)  # where the step can go next
        since = datetime.now(UTC) - timedelta(minutes=1)
        version = pipeline.status()["version"]
        url = "/ws/default/v2/models/multinode/infer"
        with Load(corral.base_url, url, b'[{"x": 2.0}]', {**admin_headers, **RECORDS}) as load:
            load.wait_ok(100)
            killed_at = kill_node(gpu_a)
            _wait_replicas(app, gpu_step, lambda nodes: nodes == [gpu_b.node_id])
            back = back_within(load, killed_at, BACK_WITHIN_S)
            load.wait_ok(100)
        summary("gpu_worker_node_killed", load, killed_at)
        print(f"FAULT gpu worker node killed: served again {back:.1f} s after the kill, step now on {gpu_b.node_id}")
        in_flight_only(load.calls, killed_at)
        assert float(_post(corral, admin_headers).json()[0]["y"]) == 6.0

        status = _wait_running(pipeline, killed_at)  # the registry kept it all
        assert (status["status"], status["version"]) == ("running", version), status
        replied = {c.request_id for c in load.replied()}
        lost = replied - logged_ids(admin, "multinode", since, replied)
        assert not lost, f"{len(lost)} of {len(replied)} replied rows are missing from the logs"

        # The CPU worker dies: the router on it goes (with at most its last log flush), HAProxy
        # sends to the one on the head, and Serve starts a second one where CPUs are left.
        assert cpu.node_id in _replica_nodes(app, ROUTER_DEPLOYMENT), "no router on the CPU worker"
        since = datetime.now(UTC) - timedelta(minutes=1)
        with Load(corral.base_url, url, b'[{"x": 2.0}]', {**admin_headers, **RECORDS}) as load:
            load.wait_ok(100)
            killed_at = kill_node(cpu)
            back = back_within(load, killed_at, BACK_WITHIN_S)
            _wait_replicas(app, ROUTER_DEPLOYMENT, lambda nodes: len(nodes) == 2 and cpu.node_id not in nodes)
            load.wait_ok(100)
        summary("cpu_worker_node_killed", load, killed_at)
        print(f"FAULT cpu worker node killed: served again {back:.1f} s after the kill")
        in_flight_only(load.calls, killed_at)
        _wait_running(pipeline, killed_at)
        replied = {c.request_id for c in load.replied()}
        lost = replied - logged_ids(admin, "multinode", since, replied)
        print(f"FAULT cpu worker log rows: {assert_only_the_last_flush_lost(load, lost, killed_at)}")
    finally:
        pipeline.undeploy()


def _post(corral: Any, admin_headers: dict[str, str]) -> Any:
    import httpx

    reply = httpx.post(
        f"{corral.base_url}/ws/default/v2/models/multinode/infer",
        content=b'[{"x": 2.0}]',
        headers={**admin_headers, **RECORDS},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    return reply
