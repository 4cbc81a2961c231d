"""Autoscaling you can see (not a test): replicas, req/s and p99 over a load ramp, drawn as a chart.

    python -m benchmarks.autoscaling [--low 1] [--high 16] [--phases 30,90,150]

Needs a running Corral (`corral up`). The demo pipeline is deployed as `bench-autoscale` with its
model step in its own deployment, autoscaling 1 -> 4 replicas (target 2 ongoing requests, upscale
delay 3 s, downscale delay 15 s); its router scales 1 -> 2 by Corral's own policy. Closed-loop
clients send single-row requests: `--low` clients, then `--high`, then `--low` again, for the
phase lengths given. Every second the script records the running replicas of the router and of
the model step (Serve's status), and the requests completed and their p99 latency in that second.
Writes benchmarks/results/autoscaling-DATE.json and .png.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from cluster.sdk import Client
from deployments.names import ROUTER_DEPLOYMENT, app_name, step_deployment_name
from examples.fraud import FEATURES, fraud_pipeline_spec, make_transactions, train_fraud_model

PIPELINE = "bench-autoscale"
RESULTS = Path(__file__).resolve().parent / "results"
RECORDS = {"content-type": "application/json; format=pandas-records"}


@dataclass
class Ramp:
    """Closed-loop clients; `active` of them send at any moment (the rest wait)."""

    url: str
    headers: dict[str, str]
    body: bytes
    clients: int
    active: int = 0
    done: list[tuple[float, float, int]] = field(default_factory=list)  # (end time, seconds, status)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, index: int) -> None:
        with httpx.Client(timeout=60) as http:
            while not self.stop.is_set():
                if index >= self.active:
                    time.sleep(0.05)
                    continue
                started = time.monotonic()
                try:
                    status = http.post(self.url, content=self.body, headers=self.headers).status_code
                except httpx.HTTPError:
                    status = 0
                ended = time.monotonic()
                self.done.append((ended, ended - started, status))


def running_replicas(app: str, deployment: str) -> int:
    from ray import serve
    from ray.serve._private.common import ReplicaState

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return 0
    return int(status.deployments[deployment].replica_states.get(ReplicaState.RUNNING, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--low", type=int, default=1)
    parser.add_argument("--high", type=int, default=16)
    parser.add_argument("--phases", default="30,90,150", help="seconds at low, high, low clients")
    args = parser.parse_args()
    phases = [float(x) for x in args.phases.split(",")]
    import ray

    ray.init(address="auto", logging_level=logging.ERROR, log_to_driver=False)
    client = Client()
    model, mean, std = train_fraud_model(make_transactions(4000, seed=3), kind="logreg")
    info = client.upload_model(PIPELINE, model, n_features=len(FEATURES))
    spec = fraud_pipeline_spec(f"{PIPELINE}:{info['version']}", mean, std)
    model_step = next(step for step in spec["steps"] if step["name"] == "model")
    model_step["placement"] = "own"
    model_step["autoscaling"] = {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 2,
        "upscale_delay_s": 3,
        "downscale_delay_s": 15,
    }
    model_step["resources"] = {"num_cpus": 0.5}
    client.pipeline(PIPELINE, spec).deploy()
    app, step = app_name("default", PIPELINE), step_deployment_name("main", "model")

    body = make_transactions(1, seed=5)[FEATURES].to_json(orient="records").encode()
    ramp = Ramp(f"{client.url}/ws/default/v2/models/{PIPELINE}/infer", {**client._http.headers, **RECORDS}, body,
                max(args.low, args.high))  # fmt: skip
    threads = [threading.Thread(target=ramp.run, args=(i,), daemon=True) for i in range(ramp.clients)]
    for thread in threads:
        thread.start()
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    schedule = [(phases[0], args.low), (phases[0] + phases[1], args.high), (sum(phases), args.low)]
    try:
        while (now := time.monotonic() - started) < sum(phases):
            ramp.active = next(clients for end, clients in schedule if now < end)
            routers, models = running_replicas(app, ROUTER_DEPLOYMENT), running_replicas(app, step)
            sample = {"t": round(now, 2), "clients": ramp.active, "router_replicas": routers, "model_replicas": models}
            samples.append(sample)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started - now)))
    finally:
        ramp.stop.set()
        for thread in threads:
            thread.join(timeout=70)
    seconds = int(sum(phases))
    per_second: list[dict[str, Any]] = []
    for second in range(seconds):
        window = [(s, status) for end, s, status in ramp.done if second <= end - started < second + 1]
        ok = [s for s, status in window if status == 200]
        per_second.append({
            "t": second, "rps": len(ok), "failed": len(window) - len(ok),
            "p99_ms": round(float(np.percentile(ok, 99)) * 1000, 1) if ok else None,
        })  # fmt: skip
    report = {
        "date": date.today().isoformat(),
        "phases_s": phases,
        "clients": [args.low, args.high, args.low],
        "autoscaling": model_step["autoscaling"],
        "max_model_replicas": max(s["model_replicas"] for s in samples),
        "final_model_replicas": samples[-1]["model_replicas"],
        "max_router_replicas": max(s["router_replicas"] for s in samples),
        "failed": sum(p["failed"] for p in per_second),
        "samples": samples,
        "per_second": per_second,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"autoscaling-{report['date']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    draw(report, stem.with_suffix(".png"))
    summary = {k: v for k, v in report.items() if k not in ("samples", "per_second")}
    print(json.dumps(summary, indent=2))
    print(f"saved {stem}.json and {stem}.png")
    client.pipeline(PIPELINE).undeploy()


def draw(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, per_second = report["samples"], report["per_second"]
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    t = [s["t"] for s in samples]
    top.step(t, [s["model_replicas"] for s in samples], where="post", label="model step replicas", lw=2)
    top.step(t, [s["router_replicas"] for s in samples], where="post", label="router replicas", lw=2, ls="--")
    top.set_ylabel("replicas")
    top.set_ylim(0, max(5, report["max_model_replicas"] + 1))
    clients = top.twinx()
    clients.fill_between(t, [s["clients"] for s in samples], step="post", alpha=0.12, color="grey")
    clients.set_ylabel("clients (shaded)")
    top.legend(loc="upper right")
    seconds = [p["t"] for p in per_second]
    middle.plot(seconds, [p["rps"] for p in per_second], color="tab:green")
    middle.set_ylabel("requests/s")
    bottom.plot(seconds, [p["p99_ms"] for p in per_second], color="tab:red")
    bottom.set_ylabel("p99 latency (ms)")
    bottom.set_xlabel("seconds")
    scaling = report["autoscaling"]
    fig.suptitle(
        f"Corral autoscaling: {report['clients'][0]} -> {report['clients'][1]} -> {report['clients'][2]} clients; "
        f"model step {scaling['min_replicas']}-{scaling['max_replicas']} replicas, target "
        f"{scaling['target_ongoing_requests']} ongoing ({report['date']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
