"""Pipeline spec -> Ray Serve application: one router plus one deployment per step of each variant."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any, cast

import orjson
from ray.serve.deployment import Application, Deployment

from cluster import code_packages
from deployments.names import ROUTER_DEPLOYMENT, step_deployment_name
from deployments.router import PipelineRouter
from deployments.step import StepDeployment
from pipelines.spec import Autoscaling, PipelineSpec, StepSpec, TrafficSpec


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
    return scaling_options_of(step.autoscaling)


def scaling_options_of(scaling: Autoscaling) -> dict[str, Any]:
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


def router_config(
    version: int, traffic: TrafficSpec, probe: str, metadata: dict[str, Any], validations: dict[str, str]
) -> dict[str, Any]:
    return {
        "version": version,
        "validations": validations,
        "config_id": secrets.token_hex(8),  # tells the deployer when this exact config is live
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
            # The model travels in user_config: swapping it reconfigures replicas instead of replacing them.
            step_args = (step.model_dump(mode="json"), storage_uri)
            deployment = cast(Deployment, StepDeployment).options(
                name=key,
                version=code_version(
                    step.model_dump(mode="json", exclude={"model"}), storage_uri, step.code and pinned
                ),
                _internal=True,
                max_constructor_retry_count=2,  # a step that cannot start fails the deploy fast
                ray_actor_options=actor_options(step, py_modules),
                user_config={"model_sha256": pinned.get("sha256") if step.model is not None else None},
                **scaling_options(step),
            )
            chain.append(deployment.bind(*step_args))
        chains[variant] = chain
    router_args = (workspace, pipeline, sorted((v, [s.name for s in vs.steps]) for v, vs in spec.variants.items()))
    router = cast(Deployment, PipelineRouter).options(
        name=ROUTER_DEPLOYMENT,
        version=code_version((router_args, max_payload_bytes)),
        _internal=True,
        ray_actor_options={"num_cpus": spec.router.num_cpus},
        user_config=router_user_config,
        **scaling_options_of(spec.router.autoscaling),
    )
    return router.bind(workspace, pipeline, chains, max_payload_bytes)


def code_version(*parts: Any) -> str:
    """A deployment's Serve version: equal arguments and Corral code give equal versions.

    Serve (`serve.run`) would otherwise give every deployment a random version on each run and
    restart all replicas; with a stable one, a run that changes only `user_config` (traffic, a
    model swap) reconfigures the running replicas in place. `version=` needs Serve's `_internal`
    flag since Ray 2.x removed it from the public options.
    """
    digest = hashlib.sha256(_SOURCE_FINGERPRINT.encode())
    digest.update(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS, default=str))
    return digest.hexdigest()[:16]


def _source_fingerprint() -> str:
    """Hash of the code replicas run, so upgrading Corral restarts replicas on the next deploy."""
    digest = hashlib.sha256()
    for package in ("deployments", "pipelines"):
        root = Path(__file__).resolve().parent.parent / package
        for path in sorted(root.rglob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()


_SOURCE_FINGERPRINT = _source_fingerprint()
