"""`corral audit` renders the audit rows readably in a 120-column terminal, with no server."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cluster import cli

ROWS = [
    {
        "time": "2026-12-04T21:14:00.156711Z",
        "token_id": "e3b98a4da31a127d",
        "role": "editor",
        "action": "model.swap",
        "target": "fraud/challenger/model",
        "status": 200,
        "method": "PUT",
        "path": "/api/v1/workspaces/default/pipelines/fraud/variants/challenger/steps/model/model",
    },
    {
        "time": "2026-12-04T21:13:59Z",
        "token_id": None,
        "role": None,
        "action": "token.create",
        "target": "",
        "status": 401,
        "method": "POST",
        "path": "/api/v1/workspaces/default/tokens",
    },
]


class StandInClient:
    def audit(self, *args: Any) -> list[dict[str, Any]]:
        return ROWS


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> Console:
    console = Console(width=120, record=True, color_system=None)
    monkeypatch.setattr(cli, "console", console)
    monkeypatch.setattr(cli, "_client", lambda workspace: StandInClient())
    return console


def test_audit_shows_who_did_which_action_on_what_one_line_each(screen: Console) -> None:
    result = CliRunner().invoke(cli.app, ["audit"])
    assert result.exit_code == 0, result.output
    lines = screen.export_text().splitlines()
    assert all(len(line) <= 120 for line in lines)
    [swap] = [line for line in lines if "model.swap" in line]
    for cell in ("2026-12-04 21:14:00", "e3b98a4da31a127d", "editor", "fraud/challenger/model", "200"):
        assert cell in swap, swap
    [refused] = [line for line in lines if "token.create" in line]
    assert "2026-12-04 21:13:59" in refused and "401" in refused
    assert not any("/api/v1" in line for line in lines)  # the HTTP request only with --http


def test_audit_with_http_shows_the_method_and_path_in_place_of_action_and_target(screen: Console) -> None:
    result = CliRunner().invoke(cli.app, ["audit", "--http"])
    assert result.exit_code == 0, result.output
    lines = screen.export_text().splitlines()
    assert all(len(line) <= 120 for line in lines)
    [header] = [line for line in lines if "time (UTC)" in line]
    assert "method" in header and "path" in header and "action" not in header and "target" not in header
    [refused] = [line for line in lines if "/tokens" in line]
    assert "POST" in refused and "/api/v1/workspaces/default/tokens" in refused and "401" in refused
    assert "PUT" in "".join(lines) and "model.swap" not in "".join(lines)
