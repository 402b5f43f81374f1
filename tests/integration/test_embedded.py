"""The embedded nats-server survives a port taken between picking it and binding it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from scanfleet.common.embedded import NatsServer


def test_a_picked_port_taken_before_the_bind_is_picked_again(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = NatsServer(tmp_path)
        server.port = taken  # someone bound it after the pick
        server.start()
        try:
            assert server.port != taken
            assert b"address already in use" in server.log_file.read_bytes()
        finally:
            server.stop()


def test_a_port_the_caller_chose_is_never_changed(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = NatsServer(tmp_path, port=taken)
        with pytest.raises(RuntimeError, match="exited"):
            server.start()
        assert server.port == taken
