"""The log ledger outlives a SIGKILLed process: its successor counts the rows it never sent."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa

from serving.log_buffer import LogBuffer
from serving.log_ledger import LogLedger, collect_lost


def test_rows_a_killed_process_queued_but_never_sent_are_counted_once(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from serving.log_ledger import LogLedger
        ledger = LogLedger(Path({str(tmp_path)!r}), "ws--p")
        ledger.queued(10)
        ledger.done(4)
        ledger.queued(3)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], check=False)
    assert killed.returncode == -9
    mine = LogLedger(tmp_path, "ws--p")  # a live replica's ledger is never counted
    mine.queued(100)
    other = LogLedger(tmp_path, "ws--other")  # another pipeline's neither
    other.queued(5)
    assert collect_lost(tmp_path, "ws--p") == 9
    assert collect_lost(tmp_path, "ws--p") == 0, "a dead ledger is counted once"
    assert mine.path.exists()
    mine.close()
    assert not mine.path.exists()
    other.close()


def test_the_buffer_marks_rows_done_only_when_the_sink_took_them(tmp_path: Path) -> None:
    ledger = LogLedger(tmp_path, "ws--p")
    sink_up = False

    async def send(kind: str, table: pa.Table) -> None:
        if not sink_up:
            raise ConnectionError("sink restarting")

    async def scenario() -> None:
        nonlocal sink_up
        buffer = LogBuffer(send, delay_s=10, ledger=ledger)
        buffer.add("inferences", pa.table({"x": [1, 2, 3]}))
        assert not await buffer.flush()
        assert (ledger.queued_rows, ledger.done_rows) == (3, 0)
        sink_up = True
        assert await buffer.flush()
        assert (ledger.queued_rows, ledger.done_rows) == (3, 3)
        if buffer.flusher is not None:
            buffer.flusher.cancel()

    asyncio.run(scenario())
    ledger.close()
