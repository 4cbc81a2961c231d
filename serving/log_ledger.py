"""What a router replica's log buffer can lose, counted where a SIGKILL cannot erase it.

Each replica keeps two counters in a 16-byte memory-mapped file: rows queued for the sink and rows
done with (sent, or dropped and already counted). A write to the mapping is a store to the page
cache, so it survives the process being killed; the next router replica of the same pipeline on
that node finds the ledgers of dead replicas, counts queued - done as lost rows, and removes them.
The count is an upper bound of the rows of replied requests that were lost: it also holds rows of
requests whose reply the crash cut off, and a batch the sink had received but not acknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
from pathlib import Path

log = logging.getLogger("corral.ledger")
_LAYOUT = struct.Struct("<QQ")  # rows queued, rows done with


class LogLedger:
    """The counters of this process's log buffer for one pipeline."""

    def __init__(self, directory: Path, owner: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{owner}.{os.getpid()}.ledger"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, _LAYOUT.size)
            self.map = mmap.mmap(fd, _LAYOUT.size)
        finally:
            os.close(fd)
        self.queued_rows = 0
        self.done_rows = 0

    def queued(self, rows: int) -> None:
        self.queued_rows += rows
        struct.pack_into("<Q", self.map, 0, self.queued_rows)

    def done(self, rows: int) -> None:
        self.done_rows += rows
        struct.pack_into("<Q", self.map, 8, self.done_rows)

    def close(self) -> None:
        """After a graceful stop, whose last flush sent everything: nothing to count."""
        with contextlib.suppress(OSError, ValueError):
            self.map.close()
            self.path.unlink()


def collect_lost(directory: Path, owner: str) -> int:
    """Rows queued but never sent by dead replicas of `owner` on this node; their ledgers are removed."""
    lost = 0
    for path in directory.glob(f"{owner}.*.ledger"):
        pid_text = path.name[len(owner) + 1 : -len(".ledger")]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        try:
            queued, done = _LAYOUT.unpack(path.read_bytes()[: _LAYOUT.size])
            path.unlink()
        except (OSError, struct.error):
            continue  # another replica took it first, or it was never written
        if queued > done:
            log.warning("a replica of %s (pid %s) died with %d log rows not sent", owner, pid_text, queued - done)
            lost += queued - done
    return lost


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
