"""A real S3-compatible server for tests: moto's server mode over HTTP on 127.0.0.1.

`s3_server` (session) starts `python -m moto.server` on a free port, waits until it answers,
creates a bucket, points the standard AWS_* variables at fake credentials (child processes such as
a Ray cluster inherit them) and stops the server at the end. `s3_uri` gives each test its own
prefix in that bucket, as a URI pyarrow.fs (and so every Corral store) opens.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

BUCKET = "corral-test"
START_TIMEOUT_S = 30.0
INSTALL_HINT = "moto's server is a dev dependency: .venv/bin/pip install -c constraints.txt -e '.[dev]'"


@dataclass(frozen=True)
class S3Server:
    """A running moto server and the bucket made on it."""

    port: int
    bucket: str

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def uri(self, prefix: str) -> str:
        """`s3://bucket/prefix?endpoint_override=...&scheme=http`: what CORRAL_STORAGE_URI holds."""
        return f"s3://{self.bucket}/{prefix.strip('/')}?endpoint_override={self.endpoint}&scheme=http"

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http", allow_bucket_creation=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_answering(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            hint = INSTALL_HINT if "No module named" in tail else "see its output above"
            raise RuntimeError(f"moto's S3 server exited with {process.returncode} ({hint}):\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers (an error status is an answer)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto's S3 server did not answer on 127.0.0.1:{port} within {START_TIMEOUT_S:g} s")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(INSTALL_HINT) from exc
    state = tmp_path_factory.mktemp("s3")
    env = {
        "AWS_ACCESS_KEY_ID": "corral-test",
        "AWS_SECRET_ACCESS_KEY": "corral-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups (seconds of timeouts off EC2)
        "AWS_CONFIG_FILE": str(state / "no-config"),  # the developer's ~/.aws stays out of it
        "AWS_SHARED_CREDENTIALS_FILE": str(state / "no-credentials"),
    }
    saved = {name: os.environ.get(name) for name in env}
    port = _free_port()
    log_path = state / "moto.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_answering(process, port, log_path)
        os.environ.update(env)
        server = S3Server(port=port, bucket=BUCKET)
        server.filesystem().create_dir(BUCKET)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_uri(s3_server: S3Server) -> str:
    """A fresh prefix of the test bucket for one test."""
    return s3_server.uri(f"t-{uuid.uuid4().hex[:12]}")
