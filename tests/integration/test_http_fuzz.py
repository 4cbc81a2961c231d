"""Schemathesis on a real cluster: Corral's control API by its own OpenAPI document, and a deployed
pipeline by the Open Inference Protocol's REST spec (vendored, tests/specs). Every generated call,
valid or not, must get no server error, and every response the spec documents (200s included)
must conform to its schema.

The fuzzing runs as the owner of a workspace of its own, so the calls it makes up (deletes,
undeploys, revocations) cannot touch the other tests' pipelines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.integration.helpers import upload_code

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WORKSPACE = "fuzz"
PIPELINE = "echo"
OIP_SPEC = Path(__file__).parents[1] / "specs" / "open_inference_rest.yaml"
CHECKS = [not_a_server_error, response_schema_conformance]
FUZZ = settings(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
    derandomize=True,  # the same calls on every run: a failure here is reproducible
)
IDENTITY = '''
class Identity:
    """Returns what it gets: any well-formed tensors make a valid reply."""

    def __init__(self, config):
        pass

    def __call__(self, table):
        return table
'''


@pytest.fixture(scope="module")
def owner(admin: Any, corral: Any) -> dict[str, str]:
    """Headers of an owner token of the fuzzing's own workspace."""
    if WORKSPACE not in admin.workspaces():
        admin.create_workspace(WORKSPACE)
    return {"authorization": f"Bearer {admin.create_token('owner', workspace=WORKSPACE)}"}


@pytest.fixture(scope="module")
def echo(corral: Any, owner: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from cluster.sdk import Client

    client = Client(corral.base_url, token=owner["authorization"][7:], workspace=WORKSPACE)
    ref = upload_code(client, "identity", "identity_step", IDENTITY, tmp_path_factory.mktemp("fuzz-code"))
    step = {"name": "echo", "python": "identity_step:Identity", "code": ref, "resources": {"num_cpus": 0.1}}
    pipeline = client.pipeline(PIPELINE, {"steps": [step], "router": {"num_cpus": 0.1}})
    pipeline.deploy()
    yield pipeline
    pipeline.undeploy()


@pytest.fixture(scope="module")
def control_schema(corral: Any) -> Any:
    document = httpx.get(f"{corral.base_url}/api/v1/openapi.json", timeout=30).json()
    return schemathesis.openapi.from_dict(document)


@pytest.fixture(scope="module")
def oip_schema(echo: Any) -> Any:
    document = yaml.safe_load(OIP_SPEC.read_text())
    # The spec writes path templates as `${NAME}`; OpenAPI's form is `{NAME}`.
    document["paths"] = {path.replace("${", "{"): item for path, item in document["paths"].items()}
    return schemathesis.openapi.from_dict(document)


def fuzz(schema: Any, base_url: str, headers: dict[str, str], pinned: dict[str, str], examples: int) -> int:
    """Valid and invalid calls to every operation of `schema`; path parameters named in `pinned`
    get those values (past the workspace and pipeline lookups, into the handlers). Returns the
    number of calls; fails listing every operation that broke a check."""
    calls = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        fixed = {name: value for name, value in pinned.items() if f"{{{name}}}" in operation.path}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(FUZZ, max_examples=examples)
            @given(case=operation.as_strategy(mode, path_parameters=fixed))
            def call(case: Any) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)

            try:
                call()
            except Unsatisfiable:
                pass  # nothing in this operation can be made invalid (its only inputs are pinned)
            except Exception as exc:  # every operation gets its turn; all failures are reported
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
    return calls


def test_control_api_never_fails_on_made_up_calls(control_schema: Any, corral: Any, owner: dict[str, str]) -> None:
    calls = fuzz(control_schema, corral.base_url, owner, {"w": WORKSPACE}, examples=25)
    assert calls > 500, calls


def test_open_inference_protocol_spec_against_a_deployed_pipeline(
    oip_schema: Any, corral: Any, owner: dict[str, str], echo: Any
) -> None:
    pinned = {"MODEL_NAME": PIPELINE, "MODEL_VERSION": str(echo.status()["version"])}
    calls = fuzz(oip_schema, f"{corral.base_url}/ws/{WORKSPACE}", owner, pinned, examples=200)
    assert calls > 300, calls  # most of them inference requests


def test_a_valid_inference_request_gets_a_schema_conformant_200(
    oip_schema: Any, corral: Any, owner: dict[str, str], echo: Any
) -> None:
    operation = oip_schema["/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"]["POST"]
    body = {
        "id": "fuzz-1",
        "inputs": [
            {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]},
            {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
        ],
    }
    case = operation.Case(
        path_parameters={"MODEL_NAME": PIPELINE, "MODEL_VERSION": str(echo.status()["version"])}, body=body
    )
    response = case.call_and_validate(base_url=f"{corral.base_url}/ws/{WORKSPACE}", headers=owner, checks=CHECKS)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["id"] == "fuzz-1"
    assert {o["name"]: o["data"] for o in reply["outputs"]} == {"x": [1.0, 2.0, 3.0, 4.0], "label": ["a", "b"]}
