"""Pipeline spec -> Ray Serve application: a router running the inline segments, plus one
deployment per `own` step (see pipelines.placement)."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any, cast

import orjson
from ray.serve.deployment import Application, Deployment

from cluster import code_packages
from cluster.batch import BatchPlan
from cluster.store.artifacts import ArtifactStore
from deployments.autoscaling import POLICY_PATH
from deployments.names import ROUTER_DEPLOYMENT, step_deployment_name
from deployments.ray_private import upload_py_modules
from deployments.router import PipelineRouter
from deployments.step import StepDeployment
from pipelines.errors import InvalidInput
from pipelines.live_config import RouterConfig, RouterLimits, StepConfig
from pipelines.placement import inline_steps, router_resources, router_scaling, segments
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
        options["runtime_env"] = {"py_modules": upload_py_modules(py_modules)}
    return options


def scaling_options(step: StepSpec) -> dict[str, Any]:
    return scaling_options_of(step.autoscaling)


def scaling_options_of(scaling: Autoscaling) -> dict[str, Any]:
    if scaling.min_replicas == scaling.max_replicas:
        return {"num_replicas": scaling.min_replicas}
    config: dict[str, Any] = {
        "min_replicas": scaling.min_replicas,
        "max_replicas": scaling.max_replicas,
        "target_ongoing_requests": scaling.target_ongoing_requests,
    }
    if scaling.upscale_delay_s is not None:
        config["upscale_delay_s"] = scaling.upscale_delay_s
    if scaling.downscale_delay_s is not None:
        config["downscale_delay_s"] = scaling.downscale_delay_s
    return {"num_replicas": "auto", "autoscaling_config": config}


def router_scaling_options(scaling: Autoscaling) -> dict[str, Any]:
    """A router's replicas: as any deployment's, but scaled by Corral's policy, which also sees CPU
    use (Serve's ongoing-request count cannot see a router's backlog: serving.load)."""
    options = scaling_options_of(scaling)
    if "autoscaling_config" in options:
        options["autoscaling_config"]["policy"] = {"policy_function": POLICY_PATH}
    return options


def router_config(
    version: int,
    traffic: TrafficSpec,
    probe: str,
    metadata: dict[str, Any],
    validations: dict[str, str],
    models: dict[str, str],
) -> dict[str, Any]:
    """The router's `user_config` (pipelines.live_config.RouterConfig) as the JSON Serve carries."""
    return RouterConfig(
        version=version,
        validations=validations,
        config_id=secrets.token_hex(8),  # tells the deployer when this exact config is live
        traffic=traffic,
        probe_hash=hashlib.sha256(probe.encode()).hexdigest(),
        metadata=metadata,
        models=models,
    ).model_dump(mode="json")


def inline_models(spec: PipelineSpec, resolved: dict[str, Any]) -> dict[str, str]:
    """sha256 of the model of every inline model step, by '<variant>.<step>' (the router loads them)."""
    return {
        step_deployment_name(variant, step.name): resolved[step_deployment_name(variant, step.name)]["sha256"]
        for variant, step in inline_steps(spec)
        if step.model is not None
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
    inline_threads: int = 2,
    request_timeout_s: float = 60.0,
    log_ledger_dir: str | None = None,
) -> Application:
    """The pipeline's Serve application: the router runs every inline segment, each `own` step is a
    deployment of its own. `code_sources(sha256, filename)` returns an upload's sources; they are
    laid out under code_dir and shipped to the replicas that import them."""
    fetch = ArtifactStore(storage_uri).get
    code = _CodeModules(resolved, code_dir, code_sources)
    chains: dict[str, list[dict[str, list[Any]]]] = {}
    inline_specs: list[Any] = []
    for variant, vspec in spec.variants.items():
        plans: list[dict[str, list[Any]]] = []
        for segment in segments(vspec.steps):
            if segment.inline:
                specs = [step.model_dump(mode="json") for step in segment.steps]
                for step in segment.steps:
                    code.add_inline(variant, step)
                inline_specs.append((variant, [code_version_of(spec_, storage_uri) for spec_ in specs]))
                plans.append({"inline": specs})
            else:
                own = [_own_step(variant, step, resolved, storage_uri, fetch, code) for step in segment.steps]
                plans.append({"own": own})
        chains[variant] = plans
    resources = router_resources(spec)
    options: dict[str, Any] = {"num_cpus": resources.num_cpus}
    if resources.memory:
        options["memory"] = resources.memory
    if code.inline_paths:
        options["runtime_env"] = {"py_modules": upload_py_modules(code.inline_paths)}
    limits = RouterLimits(
        max_payload_bytes=max_payload_bytes,
        max_queued_requests=spec.router.max_queued_requests,
        max_queue_delay_s=spec.router.max_queue_delay_ms / 1000,
        request_timeout_s=request_timeout_s,
        log_ledger_dir=log_ledger_dir,
    ).model_dump()
    router = cast(Deployment, PipelineRouter).options(
        name=ROUTER_DEPLOYMENT,
        version=code_version(
            (workspace, pipeline, sorted(chains), inline_specs, code.inline_pins, limits, storage_uri),
            inline_threads,
        ),
        _internal=True,
        max_constructor_retry_count=2,  # a router whose inline steps cannot start fails the deploy fast
        ray_actor_options=options,
        user_config=router_user_config,
        # Serve's access log line per request cost ~5% of a router's CPU on single rows (py-spy);
        # Corral's inference log and request metrics already record every request.
        logging_config={"enable_access_log": False},
        **router_scaling_options(router_scaling(spec)),
    )
    return router.bind(workspace, pipeline, chains, limits, fetch, inline_threads)


def code_version_of(step: dict[str, Any], storage_uri: str) -> dict[str, Any]:
    """What of an inline step restarts the router when it changes: all but its model (hot-swapped)."""
    return {**{k: v for k, v in step.items() if k != "model"}, "storage": storage_uri}


def _own_step(
    variant: str, step: StepSpec, resolved: dict[str, Any], storage_uri: str, fetch: Any, code: _CodeModules
) -> Application:
    key = step_deployment_name(variant, step.name)
    pinned = resolved.get(key, {})
    # The model travels in user_config: swapping it reconfigures replicas instead of replacing them.
    deployment = cast(Deployment, StepDeployment).options(
        name=key,
        version=code_version(step.model_dump(mode="json", exclude={"model"}), storage_uri, step.code and pinned),
        _internal=True,
        max_constructor_retry_count=2,  # a step that cannot start fails the deploy fast
        ray_actor_options=actor_options(step, code.own_paths(variant, step)),
        user_config=StepConfig(model_sha256=pinned.get("sha256") if step.model is not None else None).model_dump(),
        max_queued_requests=step.max_queued_requests,
        **scaling_options(step),
    )
    return deployment.bind(step.model_dump(mode="json"), fetch)


class _CodeModules:
    """Uploaded step code laid out on disk: per `own` step, and all of the router's inline steps."""

    def __init__(self, resolved: dict[str, Any], code_dir: Path, code_sources: Any) -> None:
        self.resolved = resolved
        self.code_dir = code_dir
        self.code_sources = code_sources
        self.inline_paths: list[str] = []
        self.inline_pins: list[tuple[str, str]] = []
        self.modules: dict[str, str] = {}  # top-level module -> the upload (sha) that brings it inline

    def _paths(self, variant: str, step: StepSpec) -> tuple[str, list[str]]:
        pinned = self.resolved[step_deployment_name(variant, step.name)]
        sha = pinned["sha256"]
        return sha, code_packages.materialize(self.code_sources(sha, pinned["filename"]), self.code_dir / sha)

    def own_paths(self, variant: str, step: StepSpec) -> list[str] | None:
        return self._paths(variant, step)[1] if step.code is not None else None

    def add_inline(self, variant: str, step: StepSpec) -> None:
        if step.code is None:
            return
        sha, paths = self._paths(variant, step)
        if (step.code, sha) in self.inline_pins:
            return
        for path in paths:
            module = Path(path).name.removesuffix(".py")
            other = self.modules.get(module)
            if other is not None and other != sha:
                raise InvalidInput(
                    f"step {variant}.{step.name} runs inline with code {step.code!r}, whose module {module!r} "
                    "another inline step imports from other code: one router process cannot import both. "
                    f"Set placement: own on step {step.name!r} (or use one version of the code everywhere)"
                )
            self.modules[module] = sha
        self.inline_paths.extend(paths)
        self.inline_pins.append((step.code, sha))


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


def batch_plan(
    *,
    workspace: str,
    pipeline: str,
    version: int,
    variant: str,
    spec: PipelineSpec,
    resolved: dict[str, Any],
    storage_uri: str,
    logs_uri: str,
    code_dir: Path,
    code_sources: Any,
) -> BatchPlan:
    """What a batch run of one variant needs: every step runs inline in the batch workers, whatever
    its placement online (outputs never depend on placement), with the largest step's resources."""
    steps = spec.variants[variant].steps
    code = _CodeModules(resolved, code_dir, code_sources)
    for step in steps:
        code.add_inline(variant, step)
    return BatchPlan(
        workspace=workspace,
        pipeline=pipeline,
        version=version,
        variant=variant,
        steps=[step.model_dump(mode="json") for step in steps],
        models={
            step.name: resolved[step_deployment_name(variant, step.name)]["sha256"]
            for step in steps
            if step.model is not None
        },
        storage_uri=storage_uri,
        logs_uri=logs_uri,
        validations=dict(spec.validations),
        py_modules=upload_py_modules(code.inline_paths) if code.inline_paths else [],
        num_cpus=max(1.0, max(step.resources.num_cpus for step in steps)),
        num_gpus=max(step.resources.num_gpus for step in steps),
    )
