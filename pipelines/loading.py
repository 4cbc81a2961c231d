"""Build the step object a spec describes: one function for every place a step runs.

A router replica (inline segment), a step deployment (placement `own`), an explainer and a batch
job all build their steps here, so the same object runs wherever it is placed. Model bytes come
through an injected `fetch(sha256) -> bytes`, so this module knows nothing of where artifacts live.
"""

from __future__ import annotations

from collections.abc import Callable

from pipelines.errors import CorralError, InvalidInput
from pipelines.onnx_step import OnnxModelStep
from pipelines.spec import StepSpec
from pipelines.step import Step, build_step

FetchArtifact = Callable[[str], bytes]


def load_step(
    spec: StepSpec, fetch: FetchArtifact | None = None, model_sha256: str | None = None, *, default_threads: int = 1
) -> Step:
    """The step object of `spec`; a model step needs its model's sha256 and a `fetch` for its bytes.

    onnxruntime gets as many intra-op threads as the step has CPUs (at least `default_threads`),
    and one warm-up run so the first request does not pay graph initialisation.
    """
    if spec.model is not None:
        if model_sha256 is None or fetch is None:
            raise InvalidInput(f"model step {spec.name!r} has no resolved model: deploy the pipeline again")
        step = OnnxModelStep(
            fetch(model_sha256),
            name=spec.name,
            columns=spec.columns,
            allow_nan=bool(spec.config.get("allow_nan", False)),
            num_threads=max(default_threads, int(spec.resources.num_cpus)),
            num_gpus=spec.resources.num_gpus,
        )
        step.warm_up()
        return step
    assert spec.python is not None
    try:
        return build_step(spec.python, spec.config)
    except CorralError:
        raise
    except Exception as exc:  # the user's constructor: one clear line, not a replica traceback
        raise InvalidInput(
            f"step {spec.name!r} could not load: {type(exc).__name__}: {exc}. Fix the step's __init__ "
            "(its code or its config) and deploy again"
        ) from exc
