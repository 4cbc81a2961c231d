"""Every call Corral makes into Ray's private code, in one place (checked against Ray 2.60).

Each has a reason no public API covers, and says what happens when a Ray upgrade removes it.
"""

from __future__ import annotations

from typing import Any

from pipelines.placement import Autoscaler, NodeType


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


def autoscaler() -> Autoscaler | None:
    """What can add nodes to this Ray cluster, or None when nothing can (checked against Ray 2.60).

    No public API says whether an autoscaler runs, let alone what it can add (`ray.autoscaler.sdk`
    only sends it requests), so this reads what Ray's own libraries read, in order:

    1. The cluster config an autoscaler publishes in the GCS, as Ray Data and Train read it
       (`ray._private.state`): its node types with their resources and max counts. Ray 2.60's own
       autoscalers do not publish it yet (later ones do).
    2. Else the autoscaler monitor's own report. A head started by hand (`ray start --head`, as
       `corral up` does) runs the monitor without a config: it only mirrors the live nodes, each
       as a read-only node type `node_<id>` (v1: its status in the internal KV; v2: nodes with no
       node type name). That is no autoscaler.
    3. Anything else (a monitor with a config, as `ray up` and KubeRay run it): an autoscaler that
       does not say what it can add.

    When a Ray upgrade moves these, this raises, and the deployer waits out a deploy's deadline
    as it did before it could tell (test_deploy_failures' immediate 503 fails first).
    """
    import json

    from ray._private import ray_constants
    from ray._private.state import state
    from ray._raylet import GCS_AUTOSCALER_STATE_NAMESPACE, GCS_AUTOSCALER_V2_ENABLED_KEY  # type: ignore[attr-defined]
    from ray.experimental.internal_kv import _internal_kv_get

    config = state.get_cluster_config()
    if config is not None and config.node_group_configs:
        return Autoscaler(
            tuple(
                NodeType(
                    group.name,
                    {k: float(v) for k, v in group.resources.items()},
                    None if group.max_count < 0 else int(group.max_count),  # -1: no limit
                )
                for group in config.node_group_configs
            ),
            {k: float(v) for k, v in config.max_resources.items()},
        )
    report = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    if report:
        read_only = mirrors_live_nodes(json.loads(report))
    elif _internal_kv_get(GCS_AUTOSCALER_V2_ENABLED_KEY, namespace=GCS_AUTOSCALER_STATE_NAMESPACE) == b"1":
        read_only = _v2_nodes_untyped()
    else:
        read_only = None  # no monitor has reported (yet): cannot tell
    return None if read_only else Autoscaler()


def mirrors_live_nodes(status: dict[str, Any]) -> bool | None:
    """Whether a v1 autoscaler monitor's status report is that of a monitor without a config: every
    node type it knows is the read-only type `node_<node id>` of one live node. None: no report yet."""
    mapping = (status.get("autoscaler_report") or {}).get("node_type_mapping")
    if not mapping:
        return None
    return all(node_type == f"node_{node}" for node, node_type in mapping.items())


def _v2_nodes_untyped() -> bool:
    """Autoscaler v2: a node started by an autoscaler (or KubeRay) carries its node type's name."""
    from ray.autoscaler.v2.sdk import get_cluster_resource_state
    from ray.experimental.internal_kv import internal_kv_get_gcs_client

    nodes = get_cluster_resource_state(internal_kv_get_gcs_client()).node_states
    return all(not node.ray_node_type_name for node in nodes)
