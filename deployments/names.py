"""Names shared by the deployments and the control plane (Serve app and route naming)."""

CONTROL_APP = "corral-control"
CONTROL_DEPLOYMENT = "CorralControl"
ROUTER_DEPLOYMENT = "router"
LOGS_APP = "corral-logs"
LOG_SINK_DEPLOYMENT = "LogSink"
ASSAYS_APP = "corral-assays"
ASSAY_SCHEDULER_DEPLOYMENT = "AssayScheduler"
EXPLAINER_DEPLOYMENT = "Explainer"
SYSTEM_APPS = (CONTROL_APP, LOGS_APP, ASSAYS_APP)


def app_name(workspace: str, pipeline: str) -> str:
    return f"{workspace}--{pipeline}"


def route_prefix(workspace: str, pipeline: str) -> str:
    return f"/ws/{workspace}/v2/models/{pipeline}"


def step_deployment_name(variant: str, step: str) -> str:
    return f"{variant}.{step}"


def explainer_app_name(workspace: str, pipeline: str) -> str:
    """The explainer's own app; "." cannot occur in names, so it never collides with a pipeline's app."""
    return f"{app_name(workspace, pipeline)}.explain"
