"""Corral's system applications as Serve application builders, for declarative Serve configs.

`corral up` deploys these apps itself with `serve.run`. A Serve config (KubeRay's `serveConfigV2`,
`serve deploy`) names them by `import_path` instead:

    applications:
      - {name: corral-logs, import_path: cluster.serve_apps:logs, route_prefix: null}
      - {name: corral-control, import_path: cluster.serve_apps:control, route_prefix: /}
      - {name: corral-assays, import_path: cluster.serve_apps:assays, route_prefix: null}

The builders read `CorralSettings` from the `CORRAL_*` environment of the process that builds the app
(Serve's build task, on any node: set the same environment on every node) and take no `args`.
Pipelines stay imperative: the control app deploys them with `serve.run`, and a declarative apply
deletes only declarative apps that left the config, so they survive every new `serveConfigV2`.
The control app built here restores the store's deployed pipelines each time its replica starts.
"""

from __future__ import annotations

from typing import Any, cast

from ray.serve.deployment import Application, Deployment

from cluster.control_app import control_application
from cluster.settings import CorralSettings
from deployments.names import ASSAY_SCHEDULER_DEPLOYMENT, LOG_SINK_DEPLOYMENT


def log_sink_application(settings: CorralSettings) -> Application:
    """`corral-logs`: one LogSink replica, no HTTP route (routers call it by handle)."""
    from deployments.log_sink import LogSink

    sink = cast(Deployment, LogSink).options(name=LOG_SINK_DEPLOYMENT)
    return sink.bind(settings.logs_uri)


def assay_scheduler_application(settings: CorralSettings) -> Application:
    """`corral-assays`: the scheduler that asks the control app for due assay windows."""
    from deployments.assay_scheduler import AssayScheduler

    scheduler = cast(Deployment, AssayScheduler).options(name=ASSAY_SCHEDULER_DEPLOYMENT)
    return scheduler.bind(settings.assay_tick_s)


def _settings(args: dict[str, Any]) -> CorralSettings:
    if args:
        raise ValueError(
            f"Corral's applications take no `args` (got {sorted(args)}): set CORRAL_* environment variables instead"
        )
    return CorralSettings()


def control(args: dict[str, Any]) -> Application:
    """`corral-control` at route `/`; needs CORRAL_ADMIN_TOKEN_HASH (no `corral up` makes a token here)."""
    settings = _settings(args)
    if settings.admin_token_hash is None:
        raise ValueError(
            "CORRAL_ADMIN_TOKEN_HASH is not set: give the control app the sha256 (hex) of an admin token, "
            'e.g. `printf %s "$TOKEN" | sha256sum`, from a Secret'
        )
    return cast(Application, control_application(settings, settings.admin_token_hash, restore_on_start=True))


def logs(args: dict[str, Any]) -> Application:
    """`corral-logs` (no route)."""
    return log_sink_application(_settings(args))


def assays(args: dict[str, Any]) -> Application:
    """`corral-assays` (no route)."""
    return assay_scheduler_application(_settings(args))
