"""cluster/ports.py names the processes that hold a local TCP port (read from /proc)."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from cluster.ports import PortHolder, holders

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc")


def test_a_listening_socket_is_held_by_this_process() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        (holder,) = holders(port)
        assert (holder.pid, holder.state) == (os.getpid(), "LISTEN")
        assert "python" in holder.command
        assert str(holder).startswith(f"pid {os.getpid()} (") and str(holder).endswith(", LISTEN")


def test_a_closed_connection_leaves_time_wait_owned_by_no_process() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end (local port = `port`) waits
        client.close()
        assert PortHolder(None, "", "TIME_WAIT") in holders(port)
    assert str(PortHolder(None, "", "TIME_WAIT")) == "no process, TIME_WAIT"


def test_a_port_nobody_uses_has_no_holders() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert holders(port) == []
