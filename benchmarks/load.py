"""Closed-loop HTTP load generator: a fixed request, `concurrency` in flight, for a duration or a count.

Worker processes (forked) each own a share of the keep-alive connections. Each connection is a raw
blocking socket speaking just enough HTTP/1.1 (Content-Length or chunked replies): measured against
the peer at c=1 on this 2-core machine it costs 3-4x less client CPU per request than `http.client`
and over 10x less than `httpx`, so the client is not what gets measured (benchmarks.echo gives the
generator's own ceiling). A worker with one connection loops send/recv; with several it waits on
epoll. Only 127.0.0.1 is ever targeted. Workers report their own CPU time (`client_cpu_s`), since
on a small machine the client competes with the server for the same cores.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import resource
import select
import socket
import struct
import sys
import threading
import time
from array import array
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

MAX_SECONDS = 600.0
MAX_COUNT = 10_000_000
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
_RECV = 256 * 1024


@dataclass(frozen=True)
class Target:
    """One fixed request: POST `body` to `url` with `headers`; `rows` rows per request."""

    url: str
    body: bytes
    headers: dict[str, str]
    rows: int = 1

    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        if parts.scheme != "http" or parts.hostname not in LOCAL_HOSTS:
            raise ValueError(f"the load generator only targets http://127.0.0.1, not {self.url!r}")
        return "127.0.0.1", parts.port or 80

    def request_bytes(self) -> bytes:
        parts = urlsplit(self.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host, port = self.address()
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(self.body)}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items() if k.lower() not in ("host", "content-length")]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass
class LoadResult:
    """What one load run measured; latencies cover successful requests only."""

    concurrency: int
    processes: int
    requests: int
    errors: int
    seconds: float
    req_per_s: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    first_error: str | None = None
    client_cpu_s: float | None = None  # CPU seconds the load generator itself used

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Conn:
    """A keep-alive connection and an incremental parser of the reply in flight."""

    def __init__(self, address: tuple[str, int], timeout: float) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.settimeout(None)  # blocking; the kernel enforces the timeout without extra syscalls
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tv = struct.pack("ll", int(timeout), int((timeout % 1) * 1e6))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        self.fd = self.sock.fileno()
        self.sent_ns = 0
        self._reset()

    def _reset(self) -> None:
        self.buf = bytearray()
        self.status = 0
        self.need = -1  # body bytes still expected; -1 while headers are incomplete
        self.chunked = False
        self.close_after = False

    def send(self, request: bytes) -> None:
        self._reset()
        self.sent_ns = time.monotonic_ns()
        self.sock.sendall(request)

    def receive(self) -> bool:
        """One recv; True once the whole reply is in."""
        data = self.sock.recv(_RECV)
        if not data:
            raise ConnectionError("server closed the connection mid-reply")
        self.buf += data
        return self._parse()

    def _parse(self) -> bool:
        buf = self.buf
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            self.status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip().lower()
            self.close_after = headers.get("connection") == "close"
            self.chunked = "chunked" in headers.get("transfer-encoding", "")
            self.need = 0 if self.chunked else int(headers.get("content-length", "0"))
        if not self.chunked:
            if len(buf) < self.need:
                return False
            del buf[: self.need]
            return True
        while True:  # chunked: drop whole chunks as they complete; no trailers expected
            eol = buf.find(b"\r\n")
            if eol < 0:
                return False
            size = int(bytes(buf[:eol]).split(b";")[0], 16)
            end = eol + 2 + size + 2
            if len(buf) < end:
                return False
            del buf[:end]
            if size == 0:
                return True

    def close(self) -> None:
        self.sock.close()


class _Worker:
    """One process's share of the load: `n_conns` connections, at most `count` requests."""

    def __init__(self, target: Target, n_conns: int, count: int | None, timeout: float) -> None:
        self.address = target.address()
        self.request = target.request_bytes()
        self.timeout = timeout
        self.count = count
        self.issued = 0
        self.errors = 0
        self.first_error: str | None = None
        self.latencies = array("q")
        self.conns = [_Conn(self.address, timeout) for _ in range(n_conns)]
        self.deadline_ns = 0

    def _may_issue(self) -> bool:
        if self.count is not None and self.issued >= self.count:
            return False
        return time.monotonic_ns() < self.deadline_ns

    def _fail(self, conn: _Conn, exc: BaseException | str) -> _Conn:
        self.errors += 1
        if self.first_error is None:
            self.first_error = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        conn.close()
        give_up = min(self.deadline_ns, time.monotonic_ns() + int(self.timeout * 1e9))
        while True:  # reconnect, without spinning if the server is gone
            try:
                return _Conn(self.address, self.timeout)
            except OSError:
                if time.monotonic_ns() >= give_up:
                    raise
                time.sleep(0.01)

    def _done(self, conn: _Conn) -> _Conn:
        if conn.status == 200:
            self.latencies.append(time.monotonic_ns() - conn.sent_ns)
        else:
            self._fail_status(conn.status)
        if conn.close_after:
            conn.close()
            return _Conn(self.address, self.timeout)
        return conn

    def _fail_status(self, status: int) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"HTTP {status}"

    def _send(self, conn: _Conn) -> _Conn:
        self.issued += 1
        try:
            conn.send(self.request)
        except OSError as exc:
            conn = self._fail(conn, exc)
            conn.send(self.request)  # once more on a fresh connection; failing again ends the worker
        return conn

    def run(self, seconds: float) -> tuple[int, int]:
        start = time.monotonic_ns()
        self.deadline_ns = start + int(seconds * 1e9)
        try:
            if len(self.conns) == 1:
                self._run_one()
            else:
                self._run_many()
        except OSError as exc:  # the server went away for good: report what was measured
            self.first_error = self.first_error or f"gave up: {type(exc).__name__}: {exc}"
        return start, time.monotonic_ns()

    def _run_one(self) -> None:
        conn = self.conns[0]
        while self._may_issue():
            conn = self._send(conn)
            try:
                while not conn.receive():
                    pass
            except OSError as exc:
                conn = self._fail(conn, exc)
                continue
            conn = self._done(conn)
        self.conns[0] = conn

    def _run_many(self) -> None:
        poller = select.epoll()
        by_fd: dict[int, _Conn] = {}

        def issue(conn: _Conn) -> None:
            conn = self._send(conn)
            by_fd[conn.fd] = conn
            poller.register(conn.fd, select.EPOLLIN)

        for conn in self.conns:
            if self._may_issue():
                issue(conn)
        while by_fd:
            events = poller.poll(self.timeout)
            if not events:  # nothing answered within the timeout: give up on what is in flight
                for conn in by_fd.values():
                    self._fail_status(0)
                    conn.close()
                self.first_error = self.first_error or f"no reply within {self.timeout}s"
                break
            for fd, _ in events:
                conn = by_fd[fd]
                try:
                    complete = conn.receive()
                except OSError as exc:
                    complete = False
                    poller.unregister(fd)
                    del by_fd[fd]
                    conn = self._fail(conn, exc)
                    if self._may_issue():
                        issue(conn)
                    continue
                if complete:
                    poller.unregister(fd)
                    del by_fd[fd]
                    conn = self._done(conn)
                    if self._may_issue():
                        issue(conn)
        poller.close()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker_main(
    target: Target, n_conns: int, count: int | None, seconds: float, timeout: float, barrier: Any, out: Any
) -> None:
    try:
        worker = _Worker(target, n_conns, count, timeout)
    except OSError as exc:
        barrier.abort()
        out.send({"error": f"cannot connect to {target.url}: {exc}"})
        return
    try:
        barrier.wait(timeout=30)
    except threading.BrokenBarrierError:
        out.send({"error": "another load worker failed to start"})
        return
    cpu_start = _cpu_seconds()  # from here on: the load itself, not the worker's start-up
    start, end = worker.run(seconds)
    cpu_s = _cpu_seconds() - cpu_start
    for conn in worker.conns:
        conn.close()
    out.send(
        {
            "start": start,
            "end": end,
            "errors": worker.errors,
            "first_error": worker.first_error,
            "latencies": worker.latencies.tobytes(),
            "cpu_s": cpu_s,
        }
    )


def run(
    target: Target,
    concurrency: int,
    *,
    seconds: float | None = None,
    count: int | None = None,
    processes: int | None = None,
    timeout: float = 10.0,
    start_method: str | None = None,
) -> LoadResult:
    """Keep `concurrency` requests in flight until `seconds` pass or `count` requests are sent.

    `start_method` of the worker processes: by default "fork", or "forkserver" in a Ray driver.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if seconds is None and count is None:
        raise ValueError("pass seconds, count or both")
    seconds = MAX_SECONDS if seconds is None else seconds
    if not 0 < seconds <= MAX_SECONDS or (count is not None and not 0 < count <= MAX_COUNT):
        raise ValueError(f"seconds must be in (0, {MAX_SECONDS}] and count in (0, {MAX_COUNT}]")
    target.address()  # refuse anything but 127.0.0.1 before starting processes
    n_proc = max(1, min(concurrency, processes or os.cpu_count() or 1))
    conns = [concurrency // n_proc + (i < concurrency % n_proc) for i in range(n_proc)]
    counts: list[int | None] = [None] * n_proc
    if count is not None:
        counts = [count * c // concurrency for c in conns]
        counts[0] = (counts[0] or 0) + count - sum(c or 0 for c in counts)

    ctx = _context(start_method)
    barrier = ctx.Barrier(n_proc + 1)
    pipes = [ctx.Pipe(duplex=False) for _ in range(n_proc)]
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(target, conns[i], counts[i], seconds, timeout, barrier, pipes[i][1]),
            daemon=True,
        )
        for i in range(n_proc)
    ]
    for proc in procs:
        proc.start()
    try:
        with contextlib.suppress(threading.BrokenBarrierError):  # a worker's report says why
            barrier.wait(timeout=30)
        wait_s = seconds + timeout + 30
        reports = [_report(pipe[0], proc, wait_s) for pipe, proc in zip(pipes, procs, strict=True)]
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    failed = [r["error"] for r in reports if "error" in r]
    if failed:
        raise ConnectionError(failed[0])
    return _summarise(reports, concurrency, n_proc, target.rows)


def _context(start_method: str | None) -> Any:
    """Children only use the socket module, so forking is cheap and safe, unless this process is a
    Ray driver: its gRPC and core-worker threads may hold locks at fork time that the child would
    then wait on forever. A fork server is a fresh interpreter started by fork+exec, and forks of it
    hold no such threads."""
    if start_method is None:
        ray = sys.modules.get("ray")
        start_method = "forkserver" if ray is not None and ray.is_initialized() else "fork"
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload([__name__])  # import this module once in the server, not per worker
    return ctx


def _report(reader: Any, proc: Any, wait_s: float) -> dict[str, Any]:
    """The worker's report, or an error if it died or hung instead of sending one."""
    ready = mp_connection.wait([reader, proc.sentinel], timeout=wait_s)
    if reader in ready or reader.poll():
        return reader.recv()  # type: ignore[no-any-return]
    return {"error": "a load worker died or hung without reporting"}


def _summarise(reports: list[dict[str, Any]], concurrency: int, n_proc: int, rows: int) -> LoadResult:
    lat_ns = np.concatenate([np.frombuffer(r["latencies"], dtype=np.int64) for r in reports])
    wall = (max(r["end"] for r in reports) - min(r["start"] for r in reports)) / 1e9
    ok = int(lat_ns.size)
    ms = lat_ns / 1e6
    pct = np.percentile(ms, [50, 99]) if ok else [math.nan, math.nan]
    errors = [r["first_error"] for r in reports if r["first_error"]]
    return LoadResult(
        concurrency=concurrency,
        processes=n_proc,
        requests=ok,
        errors=sum(r["errors"] for r in reports),
        seconds=round(wall, 3),
        req_per_s=ok / wall if wall > 0 else 0.0,
        rows_per_s=ok * rows / wall if wall > 0 else 0.0,
        p50_ms=float(pct[0]),
        p99_ms=float(pct[1]),
        mean_ms=float(ms.mean()) if ok else math.nan,
        first_error=errors[0] if errors else None,
        client_cpu_s=round(sum(r["cpu_s"] for r in reports), 3),
    )
