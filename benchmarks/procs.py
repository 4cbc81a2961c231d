"""Figures of local processes read from /proc (Linux): CPU seconds, resident memory, HAProxy pids."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_PROC = Path("/proc")


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by process `pid` (all its threads), None if unknown."""
    if pid is None:
        return None
    try:
        # The command name in field 2 may hold spaces and parentheses: split after its closing one.
        fields = (_PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def total_cpu_seconds(pids: Iterable[int]) -> float | None:
    """CPU seconds of all `pids` together; None if any of them cannot be read (an exited process
    would make a before/after difference meaningless)."""
    total = 0.0
    for pid in pids:
        seconds = cpu_seconds(pid)
        if seconds is None:
            return None
        total += seconds
    return total


def rss_bytes(pid: int) -> int | None:
    """Resident set size of process `pid` (VmRSS), None if unknown."""
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def pids_named(comm: str) -> list[int]:
    """Pids of the processes whose command name (/proc/<pid>/comm) is `comm`, e.g. "haproxy"."""
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == comm:
                found.append(int(entry.name))
        except OSError:
            continue  # exited while we looked
    return sorted(found)
