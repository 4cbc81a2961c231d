"""Which local processes hold a TCP port (Linux /proc): named in errors so a user can stop them."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


@dataclass(frozen=True)
class PortHolder:
    pid: int | None  # None: no process owns the socket any more (TIME_WAIT), or /proc hides it
    command: str
    state: str

    def __str__(self) -> str:
        who = f"pid {self.pid} ({self.command})" if self.pid is not None else "no process"
        return f"{who}, {self.state}"


def holders(port: int, proc: Path = Path("/proc")) -> list[PortHolder]:
    """The sockets bound to local `port` and the processes that own them; empty where /proc is absent."""
    inodes: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes[fields[9]] = _TCP_STATES.get(fields[3], fields[3])
    if not inodes:
        return []
    found: dict[PortHolder, None] = {}  # one line per process and state, in the order seen
    owned: set[str] = set()
    for fd_dir in proc.glob("[0-9]*/fd"):
        for link in _links(fd_dir):
            inode = link[len("socket:[") : -1] if link.startswith("socket:[") else None
            if inode in inodes and inode not in owned:
                owned.add(inode)
                found[PortHolder(int(fd_dir.parent.name), _command(fd_dir.parent), inodes[inode])] = None
    for inode, state in inodes.items():
        if inode not in owned:
            found[PortHolder(None, "", state)] = None
    return list(found)


def _links(fd_dir: Path) -> list[str]:
    links = []
    with contextlib.suppress(OSError):  # the process may be gone, or an fd closed while listing
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                links.append(os.readlink(fd))
    return links


def _command(process: Path) -> str:
    try:
        words = (process / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(w.decode(errors="replace") for w in words if w)[:160]
