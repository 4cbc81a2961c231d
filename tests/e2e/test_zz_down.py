"""Runs last: `corral down` from the CLI, as a user runs it after a session, stops Ray for good."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli import corral as corral_cli

pytestmark = pytest.mark.integration


def _ray_processes() -> list[str]:
    names = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "/raylet" in cmdline or "gcs_server" in cmdline:
            names.append(cmdline[:120])
    return names


def test_corral_down_from_the_cli_stops_ray(corral: Any) -> None:
    import ray

    from cluster import lifecycle

    assert lifecycle._ray_running(), "the session's cluster should be up before this test"
    down = corral_cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopping the local Ray head" in down.stdout, down.stdout
    ray.shutdown()  # this driver's connection died with the cluster

    status = subprocess.run([lifecycle._ray_bin(), "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode != 0, f"Ray still answers after `corral down`:\n{status.stdout}"
    assert not _ray_processes(), f"Ray processes left after `corral down`: {_ray_processes()}"
    again = corral_cli("down")
    assert again.returncode == 0 and "Corral is not running" in again.stdout, again.stdout + again.stderr
