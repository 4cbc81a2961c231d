"""wrk (https://github.com/wg/wrk) as the load generator, with the figures benchmarks.load reports.

wrk is C with an epoll loop per thread: it drives more requests per client CPU-second than the
Python generator, which matters when client and server share two cores. A small Lua script reads
the POST body from a file (bodies are up to a few MB; a command line could not carry them) and
prints a JSON summary from `done()`, so nothing depends on wrk's human-readable report.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.load import LoadResult, Target

_MARKER = "CORRAL_WRK "
# init() runs in every wrk thread before wrk.format() builds the request, so the body set here
# is sent by all of them; -H headers come from the command line. No response() hook: defining
# one makes wrk parse every reply in Lua.
LUA = """
function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %.1f, "p99_us": %.1f, "mean_us": %.1f}\\n',
    "MARKER", summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
""".replace("MARKER", _MARKER)


def available() -> bool:
    """True when a `wrk` binary is on PATH."""
    return shutil.which("wrk") is not None


def threads_for(concurrency: int) -> int:
    """wrk threads: one for a single connection, two otherwise (this machine has two cores)."""
    return 1 if concurrency == 1 else 2


def run(target: Target, concurrency: int, seconds: float, *, timeout: float = 10.0) -> LoadResult:
    """Keep `concurrency` requests in flight for `seconds` (whole seconds: wrk takes no fractions)."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    target.address()  # the same 127.0.0.1-only rule as the built-in generator
    duration = max(1, round(seconds))
    threads = threads_for(concurrency)
    with tempfile.TemporaryDirectory(prefix="corral-wrk-") as tmp:
        body, script = Path(tmp) / "body", Path(tmp) / "post.lua"
        body.write_bytes(target.body)
        script.write_text(LUA)
        cmd = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration}s", f"--timeout={math.ceil(timeout)}s"]
        for key, value in target.headers.items():
            if key.lower() not in ("host", "content-length"):  # wrk sets both itself
                cmd += ["-H", f"{key}: {value}"]
        cmd += ["-s", str(script), target.url, "--", str(body)]
        cpu_before = _children_cpu_seconds()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout + 30)
        client_cpu = _children_cpu_seconds() - cpu_before
    summary = _summary(proc)
    return _result(summary, concurrency, threads, target.rows, client_cpu)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # terminated, waited-for children: wrk
    return usage.ru_utime + usage.ru_stime


def _summary(proc: subprocess.CompletedProcess[str]) -> dict[str, float]:
    for line in proc.stdout.splitlines():
        if line.startswith(_MARKER):
            return json.loads(line[len(_MARKER) :])  # type: ignore[no-any-return]
    output = (proc.stdout + proc.stderr).strip()[-1000:]
    raise ConnectionError(f"wrk exited with {proc.returncode} without a summary: {output}")


def _result(summary: dict[str, float], concurrency: int, threads: int, rows: int, client_cpu: float) -> LoadResult:
    seconds = summary["duration_us"] / 1e6
    non_2xx = int(summary["status"])  # wrk counts replies with status >= 400 here
    transport = int(summary["connect"] + summary["read"] + summary["write"] + summary["timeout"])
    ok = int(summary["requests"]) - non_2xx
    first_error = None
    if non_2xx or transport:
        first_error = (
            f"wrk: {non_2xx} replies with HTTP status >= 400, {int(summary['timeout'])} timeouts, "
            f"{int(summary['connect'] + summary['read'] + summary['write'])} connect/read/write errors"
        )
    return LoadResult(
        concurrency=concurrency,
        processes=threads,
        requests=ok,
        errors=non_2xx + transport,
        seconds=round(seconds, 3),
        req_per_s=ok / seconds if seconds > 0 else 0.0,
        rows_per_s=ok * rows / seconds if seconds > 0 else 0.0,
        # wrk's latencies include the failed replies; with none (the normal case) they are the same.
        p50_ms=summary["p50_us"] / 1000 if ok else math.nan,
        p99_ms=summary["p99_us"] / 1000 if ok else math.nan,
        mean_ms=summary["mean_us"] / 1000 if ok else math.nan,
        first_error=first_error,
        client_cpu_s=round(client_cpu, 3),
    )
