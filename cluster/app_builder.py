"""Pipeline spec -> Ray Serve application: one router plus one deployment per step of each variant."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, cast

from ray.serve.deployment import Application, Deployment

from cluster import code_packages
from deployments.names import ROUTER_DEPLOYMENT, step_deployment_name
from deployments.router import PipelineRouter
from deployments.step import StepDeployment
from pipelines.spec import PipelineSpec, StepSpec, TrafficSpec


def actor_options(step: StepSpec, py_modules: list[str] | None) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": step.resources.num_cpus}
    if step.resources.num_gpus:
        options["num_gpus"] = step.resources.num_gpus
    if step.resources.memory:
        options["memory"] = step.resources.memory
    if step.resources.accelerator_type:
        options["accelerator_type"] = step.resources.accelerator_type
    if py_modules:
        options["runtime_env"] = {"py_modules": upload_modules(py_modules)}
    return options


def upload_modules(paths: list[str]) -> list[str]:
    """Upload local module paths to the cluster (GCS) and return their `gcs://` URIs.

    Serve accepts only URIs in a deployment's runtime_env (local paths work just for a whole job),
    so the control app uploads the code itself, the way Ray does for `ray.init(runtime_env=...)`.
    """
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed

    env = upload_py_modules_if_needed({"py_modules": list(paths)}, include_gitignore=False)
    return list(env["py_modules"])


def scaling_options(step: StepSpec) -> dict[str, Any]:
    scaling = step.autoscaling
    if scaling.min_replicas == scaling.max_replicas:
        return {"num_replicas": scaling.min_replicas}
    return {
        "num_replicas": "auto",
        "autoscaling_config": {
            "min_replicas": scaling.min_replicas,
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
        },
    }


def router_config(version: int, traffic: TrafficSpec, probe: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": version,
        "traffic": traffic.model_dump(mode="json"),
        "probe_hash": hashlib.sha256(probe.encode()).hexdigest(),
        "metadata": metadata,
    }


def build_app(
    *,
    workspace: str,
    pipeline: str,
    spec: PipelineSpec,
    resolved: dict[str, Any],
    router_user_config: dict[str, Any],
    storage_uri: str,
    code_dir: Path,
    code_sources: Any,
    max_payload_bytes: int,
) -> Application:
    """`code_sources(sha256, filename)` returns an upload's sources; they are laid out under code_dir."""
    chains: dict[str, list[Application]] = {}
    for variant, vspec in spec.variants.items():
        chain = []
        for step in vspec.steps:
            key = step_deployment_name(variant, step.name)
            pinned = resolved.get(key, {})
            py_modules = None
            if step.code is not None:
                sha = pinned["sha256"]
                py_modules = code_packages.materialize(code_sources(sha, pinned["filename"]), code_dir / sha)
            deployment = cast(Deployment, StepDeployment).options(
                name=key,
                max_constructor_retry_count=2,  # a step that cannot start fails the deploy fast
                ray_actor_options=actor_options(step, py_modules),
                **scaling_options(step),
            )
            chain.append(
                deployment.bind(
                    step.model_dump(mode="json"),
                    pinned.get("sha256") if step.model is not None else None,
                    storage_uri,
                )
            )
        chains[variant] = chain
    router = cast(Deployment, PipelineRouter).options(
        name=ROUTER_DEPLOYMENT,
        ray_actor_options={"num_cpus": 0.25},
        user_config=router_user_config,
    )
    return router.bind(workspace, pipeline, chains, max_payload_bytes)
