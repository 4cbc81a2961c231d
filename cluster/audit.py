"""The audit log of the control API: what each change is called, and the ASGI middleware that records it.

Every control-plane change (POST, PUT, PATCH or DELETE on an /api/v1 route) leaves one row: who (token
id and role), a dotted action (`pipeline.deploy`), its target (the object's name), the HTTP method and
path, and the status the client got.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cluster.auth import Principal
from cluster.registry import Registry

log = logging.getLogger("corral.audit")

AUDITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Action:
    """How one route reads in the audit log: a verb on a noun, and the object it acts on."""

    name: str
    # The target from the route's path parameters; "" when the endpoint names it with `note` (a name
    # sent in the body, an id made by the request). A request that fails before it does has target "".
    target: str = ""


# Every mutating route under /api/v1, by (method, path template after /api/v1). None: the route computes
# without changing anything and is not audited. tests/unit/test_api.py fails on a route missing here.
ROUTES: dict[tuple[str, str], Action | None] = {
    ("POST", "/workspaces"): Action("workspace.create"),
    ("POST", "/workspaces/{w}/tokens"): Action("token.create"),
    ("DELETE", "/workspaces/{w}/tokens/{token_id}"): Action("token.revoke", "{token_id}"),
    ("POST", "/workspaces/{w}/models"): Action("model.upload"),
    ("POST", "/workspaces/{w}/code"): Action("code.upload"),
    ("PUT", "/workspaces/{w}/datasets/{name}"): Action("dataset.upload", "{name}"),
    ("PUT", "/workspaces/{w}/pipelines/{p}"): Action("pipeline.apply", "{p}"),
    ("POST", "/workspaces/{w}/pipelines/{p}/deploy"): Action("pipeline.deploy", "{p}"),
    ("POST", "/workspaces/{w}/pipelines/{p}/undeploy"): Action("pipeline.undeploy", "{p}"),
    ("PUT", "/workspaces/{w}/pipelines/{p}/traffic"): Action("traffic.set", "{p}"),
    ("PUT", "/workspaces/{w}/pipelines/{p}/variants/{v}/steps/{s}/model"): Action("model.swap", "{p}/{v}/{s}"),
    ("POST", "/workspaces/{w}/pipelines/{p}/batch"): Action("batch.start", "{p}"),
    ("PUT", "/workspaces/{w}/assays/{a}"): Action("assay.apply", "{a}"),
    ("DELETE", "/workspaces/{w}/assays/{a}"): Action("assay.delete", "{a}"),
    ("POST", "/workspaces/{w}/pipelines/{p}/explain"): None,
    ("POST", "/workspaces/{w}/assays/{a}/preview"): None,
}

# Keys in the ASGI scope's "state" (what `request.state` reads and writes).
_WHO = "audit_who"
_TARGET = "audit_target"
_WORKSPACE = "audit_workspace"


def note(
    request: Request, *, who: Principal | None = None, target: str | None = None, workspace: str | None = None
) -> None:
    """Tell this request's audit row what its route cannot: the caller, once authenticated; the target,
    when the body names it or the request makes it; the workspace, when the request creates it."""
    for key, value in ((_WHO, who), (_TARGET, target), (_WORKSPACE, workspace)):
        if value is not None:
            setattr(request.state, key, value)


@dataclass(frozen=True)
class Row:
    """One audit row, as `Registry.record_audit` takes it."""

    who: Principal | None
    workspace: str | None
    action: str
    target: str
    status: int
    method: str
    path: str


def audit_row(scope: Scope, status: int, prefix: str) -> Row | None:
    """The row of a request that went through the router, or None when it is not audited: not a change,
    not under `prefix`, computing only (ROUTES says None), or taken by no endpoint (404, 405)."""
    method = scope["method"]
    route = scope.get("route")
    template: str = getattr(route, "path", "")
    if method not in AUDITED_METHODS or method not in (getattr(route, "methods", None) or ()):
        return None
    if not template.startswith(prefix + "/"):
        return None
    key = (method, template[len(prefix) :])
    # A route missing from ROUTES still leaves a row, under its endpoint's name: better than none.
    action = ROUTES[key] if key in ROUTES else Action(getattr(route, "name", "") or "unnamed")
    if action is None:
        return None
    state: dict[str, Any] = scope.get("state", {})
    params: dict[str, Any] = scope.get("path_params", {})
    target = state.get(_TARGET) or action.target.format_map(params)
    workspace = state.get(_WORKSPACE) or params.get("w")
    return Row(state.get(_WHO), workspace, action.name, target, status, method, scope["path"])


class AuditLog:
    """Pure ASGI middleware: one audit row per control-plane change, written before the last of its reply
    goes out, so that a client holding the reply finds the row.

    It sits inside Starlette's ServerErrorMiddleware, whose handler answers an endpoint's unexpected
    exception: such a request sends nothing through here, so it is recorded as the 500 it gets."""

    def __init__(self, app: ASGIApp, registry: Registry, prefix: str) -> None:
        self.app = app
        self.registry = registry
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in AUDITED_METHODS:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # so that what endpoints note lands in this very dict
        status = 500
        recorded = False

        async def record_once() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                await self._record(scope, status)

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                await record_once()
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            await record_once()  # the endpoint raised, or the reply never finished

    async def _record(self, scope: Scope, status: int) -> None:
        try:
            row = audit_row(scope, status, self.prefix)
            if row is None:
                return
            # In a thread: a database write must not stall the event loop.
            await asyncio.to_thread(
                self.registry.record_audit,
                row.who,
                row.workspace,
                row.action,
                row.target,
                row.status,
                method=row.method,
                path=row.path,
            )
        except Exception:  # an audit row that cannot be written must not change the reply
            log.exception("could not write the audit row of %s %s", scope["method"], scope["path"])
