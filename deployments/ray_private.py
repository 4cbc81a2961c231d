"""Every call Corral makes into Ray's private code, in one place (checked against Ray 2.60).

Each has a reason no public API covers, and says what happens when a Ray upgrade removes it.
"""

from __future__ import annotations

from typing import Any


def replica_assigned(response: Any) -> bool:
    """Whether Serve has given a DeploymentResponse's request to a replica yet.

    It tells a cold start (no replica took the request before its deadline: a 503 to retry) from
    work that ran too long (a 504). Without the private field every request counts as assigned,
    and a deadline is a 504 as before.
    """
    future = getattr(response, "_replica_result_future", None)
    # A deadline cancels the response, and with it an assignment still pending: cancelled = never assigned.
    return future is None or bool(future.done() and not future.cancelled())


def upload_py_modules(paths: list[str]) -> list[str]:
    """Upload local module paths to the cluster (GCS) and return their `gcs://` URIs.

    Serve accepts only URIs in a deployment's runtime_env (local paths work just for a whole job),
    so the control app uploads the code itself, the way Ray does for `ray.init(runtime_env=...)`.
    When a Ray upgrade moves it, pipelines with uploaded code fail to deploy with an ImportError
    naming this function (tests/integration/test_code_and_placement.py fails first).
    """
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed

    env = upload_py_modules_if_needed({"py_modules": list(paths)}, include_gitignore=False)
    return list(env["py_modules"])


def turn_off_auto_connect() -> None:
    """Stop Ray from connecting this process by itself when a Ray call runs unconnected.

    The switch RAY_ENABLE_AUTO_CONNECT=0 sets, flipped after import (the CLI cannot set the
    variable before Ray reads it). See cluster/ray_driver.py for why. When a Ray upgrade removes
    it, `corral up` fails with an ImportError here; test_zz_restart checks that a Ray call after
    `corral down` connects nothing.
    """
    from ray._private import auto_init_hook

    auto_init_hook.enable_auto_connect = False
