"""deploy/kuberay/rayservice.yaml, checked offline (no Kubernetes, no Ray cluster): KubeRay's vendored
RayService CRD schema, Ray's own Serve config schema, Corral's application builders, and the Ray
environment and version it shares with cluster/lifecycle.py, ray-cluster.yaml and constraints.txt."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
import pytest
import yaml
from ray._common.utils import import_attr
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve._private.build_app import build_app
from ray.serve.deployment import Application
from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

from cluster.auth import hash_token, new_token
from cluster.lifecycle import RAY_PROCESS_ENV
from deployments.names import (
    ASSAY_SCHEDULER_DEPLOYMENT,
    ASSAYS_APP,
    CONTROL_APP,
    CONTROL_DEPLOYMENT,
    LOG_SINK_DEPLOYMENT,
    LOGS_APP,
    SYSTEM_APPS,
)

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kuberay" / "rayservice.yaml"
SECRET = ROOT / "deploy" / "kuberay" / "secret.example.yaml"
DOCKERFILE = ROOT / "deploy" / "kuberay" / "Dockerfile"
CRD = ROOT / "tests" / "specs" / "kuberay" / "ray.io_rayservices.yaml"
INGRESS = {CONTROL_APP: CONTROL_DEPLOYMENT, LOGS_APP: LOG_SINK_DEPLOYMENT, ASSAYS_APP: ASSAY_SCHEDULER_DEPLOYMENT}
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRD is 1 MB of YAML


def _load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=Loader)


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    loaded = _load(MANIFEST)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The v1 openAPIV3Schema of the vendored RayService CRD."""
    crd = _load(CRD)
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == "RayService"
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert v1["served"] and v1["storage"]
    found: dict[str, Any] = v1["schema"]["openAPIV3Schema"]
    return found


@pytest.fixture(scope="module")
def serve_config(manifest: dict[str, Any]) -> dict[str, Any]:
    loaded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert isinstance(loaded, dict)
    return loaded


def _schema_errors(doc: Any, schema: dict[str, Any]) -> list[str]:
    # A CRD's structural schema is OpenAPI 3.0, a JSON Schema draft-4 dialect; the x-kubernetes-*
    # keywords are unknown to jsonschema and ignored.
    validator = jsonschema.Draft4Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def _unknown_fields(doc: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not declare. The CRD never says additionalProperties: false, so JSON
    Schema accepts them; the API server prunes them silently, or refuses them under strict field
    validation (kubectl's default). A misspelled field would otherwise just vanish."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(doc, list):
        items = schema.get("items", {})
        return [f for i, item in enumerate(doc) for f in _unknown_fields(item, items, f"{path}[{i}]")]
    if not isinstance(doc, dict):
        return []
    properties, extra = schema.get("properties"), schema.get("additionalProperties")
    if properties is None and extra is None:
        return []  # an opaque object: the top-level metadata, checked by the API server itself
    found = []
    for key, value in doc.items():
        where = f"{path}.{key}" if path else key
        if properties and key in properties:
            found += _unknown_fields(value, properties[key], where)
        elif isinstance(extra, dict):
            found += _unknown_fields(value, extra, where)
        elif extra is not True:
            found.append(where)
    return found


def _groups(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cluster = manifest["spec"]["rayClusterConfig"]
    return {"head": cluster["headGroupSpec"], **{g["groupName"]: g for g in cluster["workerGroupSpecs"]}}


def _containers(manifest: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for group, spec in _groups(manifest).items():
        for container in spec["template"]["spec"]["containers"]:
            yield group, container


def _ray_version() -> str:
    (pin,) = re.findall(r"^ray==(\S+)$", (ROOT / "constraints.txt").read_text(), flags=re.M)
    return pin


# (a) KubeRay's CRD schema -------------------------------------------------------------------------


def test_manifest_validates_against_the_rayservice_crd(manifest: dict[str, Any], schema: dict[str, Any]) -> None:
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    assert _schema_errors(manifest, schema) == []
    assert _unknown_fields(manifest, schema) == []


def test_the_crd_check_catches_wrong_types_and_misspelled_fields(
    manifest: dict[str, Any], schema: dict[str, Any]
) -> None:
    wrong_type = copy.deepcopy(manifest)
    wrong_type["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    assert any("replicas" in e and "'two' is not of type 'integer'" in e for e in _schema_errors(wrong_type, schema))

    not_a_string = copy.deepcopy(manifest)  # a YAML number where ray start params must be strings
    not_a_string["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]["rayStartParams"]["num-gpus"] = 1
    assert any("num-gpus" in e for e in _schema_errors(not_a_string, schema))

    missing = copy.deepcopy(manifest)
    del missing["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert any("'headGroupSpec' is a required property" in e for e in _schema_errors(missing, schema))

    # JSON Schema alone lets a misspelled field through (Kubernetes would drop it): the walk finds it.
    misspelled = copy.deepcopy(manifest)
    misspelled["spec"]["serveConfigV3"] = misspelled["spec"].pop("serveConfigV2")
    misspelled["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["envfrom"] = []
    assert _schema_errors(misspelled, schema) == []
    assert _unknown_fields(misspelled, schema) == [
        "spec.rayClusterConfig.headGroupSpec.template.spec.containers[0].envfrom",
        "spec.serveConfigV3",
    ]


# (b) Ray's Serve config schema ----------------------------------------------------------------------


def test_serve_config_parses_with_rays_schema(serve_config: dict[str, Any]) -> None:
    config = ServeDeploySchema.model_validate(serve_config)
    apps = {app.name: app for app in config.applications}
    assert set(apps) == set(SYSTEM_APPS)
    # Pipelines are imperative apps named "<workspace>--<pipeline>" at /ws/...: a declarative app of the
    # same name would take a pipeline over, one at the same prefix would be routed ambiguously.
    assert all("--" not in name for name in apps)
    assert {name: app.route_prefix for name, app in apps.items()} == {
        CONTROL_APP: "/",
        LOGS_APP: None,
        ASSAYS_APP: None,
    }
    assert config.http_options.host == "0.0.0.0"


def test_serve_config_has_no_field_ray_would_ignore(serve_config: dict[str, Any]) -> None:
    # Ray's schema ignores unknown keys: a misspelled `deployments` loses its overrides silently.
    def unknown(config: dict[str, Any]) -> list[str]:
        found = sorted(set(config) - set(ServeDeploySchema.model_fields))
        for app in config["applications"]:
            found += sorted(f"{app['name']}.{k}" for k in set(app) - set(ServeApplicationSchema.model_fields))
        return found

    assert unknown(serve_config) == []
    typo = copy.deepcopy(serve_config)
    typo["applications"][1]["deployment"] = [{"name": CONTROL_DEPLOYMENT, "num_replicas": 2}]
    ServeDeploySchema.model_validate(typo)  # accepted by Ray...
    assert unknown(typo) == [f"{typo['applications'][1]['name']}.deployment"]  # ...caught here


# (c) the import paths build Corral's applications with the manifest's environment ------------------


def _env(manifest: dict[str, Any]) -> dict[str, str]:
    """What a Ray pod's environment holds: the container's literal env plus the example Secret."""
    secret = _load(SECRET)
    assert secret["kind"] == "Secret"
    (_, head), *_ = _containers(manifest)
    assert [ref["secretRef"]["name"] for ref in head["envFrom"]] == [secret["metadata"]["name"]]
    env = {item["name"]: item["value"] for item in head["env"]}
    return {**env, **secret["stringData"]}


@pytest.fixture
def pod_env(manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    import os

    for name in [n for n in os.environ if n.startswith("CORRAL_")]:
        monkeypatch.delenv(name)
    env = _env(manifest)
    env["CORRAL_ADMIN_TOKEN_HASH"] = hash_token(new_token())  # what the operator puts in the Secret
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _build(app: dict[str, Any]) -> Application:
    built = call_user_app_builder_with_args_if_necessary(import_attr(app["import_path"]), app.get("args") or {})
    assert isinstance(built, Application)
    return built


def test_every_import_path_builds_its_application(serve_config: dict[str, Any], pod_env: dict[str, str]) -> None:
    for app in serve_config["applications"]:
        built = build_app(_build(app), name=app["name"])
        assert built.ingress_deployment_name == INGRESS[app["name"]]
        assert [d.name for d in built.deployments] == [INGRESS[app["name"]]]


def test_control_app_gets_the_store_the_admin_hash_and_restores_on_start(
    serve_config: dict[str, Any], pod_env: dict[str, str]
) -> None:
    (control,) = [app for app in serve_config["applications"] if app["name"] == CONTROL_APP]
    settings, admin_hash, restore_on_start = _build(control)._bound_deployment.init_args
    assert admin_hash == pod_env["CORRAL_ADMIN_TOKEN_HASH"] and restore_on_start is True
    assert settings["database_url"] == pod_env["CORRAL_DATABASE_URL"].strip()
    assert settings["storage_uri"] == pod_env["CORRAL_STORAGE_URI"]
    assert (settings["host"], settings["port"]) == ("0.0.0.0", 8000)


def test_control_app_refuses_the_placeholder_a_missing_hash_and_args(
    serve_config: dict[str, Any], pod_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (control,) = [app for app in serve_config["applications"] if app["name"] == CONTROL_APP]
    monkeypatch.setenv("CORRAL_ADMIN_TOKEN_HASH", _load(SECRET)["stringData"]["CORRAL_ADMIN_TOKEN_HASH"])
    with pytest.raises(pydantic.ValidationError, match="admin_token_hash"):
        _build(control)
    monkeypatch.delenv("CORRAL_ADMIN_TOKEN_HASH")
    with pytest.raises(ValueError, match="CORRAL_ADMIN_TOKEN_HASH is not set"):
        _build(control)
    for app in serve_config["applications"]:
        with pytest.raises(ValueError, match="take no `args`"):
            _build({**app, "args": {"port": 9000}})


# (d) the Ray environment cannot drift from `corral up`'s ---------------------------------------------


def test_every_container_gets_ray_process_env(manifest: dict[str, Any]) -> None:
    containers = list(_containers(manifest))
    assert {group for group, _ in containers} == {"head", "cpu", "gpu"}
    _, head = containers[0]
    for group, container in containers:
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert {name: env.get(name) for name in RAY_PROCESS_ENV} == RAY_PROCESS_ENV, group
        # Serve builds apps and places replicas on any pod: the same environment on every one.
        assert (container["env"], container["envFrom"]) == (head["env"], head["envFrom"]), group


def test_serve_port_is_the_same_everywhere(manifest: dict[str, Any], serve_config: dict[str, Any]) -> None:
    port = serve_config["http_options"]["port"]
    assert int(_env(manifest)["CORRAL_PORT"]) == port
    assert [p["port"] for p in manifest["spec"]["serveService"]["spec"]["ports"] if p["name"] == "serve"] == [port]
    for group, container in _containers(manifest):
        assert {"name": "serve", "containerPort": port} in container["ports"], group


def test_gpu_group_asks_for_gpus_and_runs_the_gpu_image(manifest: dict[str, Any]) -> None:
    groups = _groups(manifest)
    gpu = groups["gpu"]
    (container,) = gpu["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == int(gpu["rayStartParams"]["num-gpus"]) >= 1
    assert container["image"].endswith("-gpu") and gpu["minReplicas"] == 0
    for name in ("head", "cpu"):
        (cpu_container,) = groups[name]["template"]["spec"]["containers"]
        assert cpu_container["image"].endswith("-cpu") and "nvidia.com/gpu" not in cpu_container["resources"]["limits"]
    dockerfile = DOCKERFILE.read_text()
    swap = next(line for line in dockerfile.splitlines() if "onnxruntime-gpu" in line and "pip install" in line)
    assert swap.index("pip uninstall -y onnxruntime") < swap.index("onnxruntime-gpu")


# (e) one Ray version ------------------------------------------------------------------------------


def test_one_ray_version_everywhere(manifest: dict[str, Any]) -> None:
    version = _ray_version()
    assert manifest["spec"]["rayClusterConfig"]["rayVersion"] == version
    for group, container in _containers(manifest):
        assert f"-ray{version}-" in container["image"], group  # tags made by deploy/kuberay/Dockerfile
    dockerfile = DOCKERFILE.read_text()
    assert f"ARG RAY_VERSION={version}\n" in dockerfile
    assert "FROM rayproject/ray:${RAY_VERSION}-py311-${FLAVOUR}" in dockerfile
    cluster_yaml = _load(ROOT / "ray-cluster.yaml")
    commands = (
        cluster_yaml["setup_commands"] + cluster_yaml["available_node_types"]["gpu_worker"]["worker_setup_commands"]
    )
    installs = [c for c in commands if "pip install" in c and "corral" in c]
    assert len(installs) == 2 and all(f'"ray[serve]=={version}"' in c for c in installs)
