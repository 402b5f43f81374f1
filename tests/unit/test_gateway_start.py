"""A gateway other machines can reach never starts open."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanfleet.common.clients import Client, ClientsFile, save_clients
from scanfleet.common.config import ConfigError, Settings
from scanfleet.common.scope import Scope
from scanfleet.gateway.service import refuse_unsafe_start


def test_a_non_loopback_gateway_without_clients_refuses_to_start(tmp_path: Path) -> None:
    clients = tmp_path / "clients.yaml"
    with pytest.raises(ConfigError, match="no client is configured"):
        refuse_unsafe_start(Settings(gateway_host="0.0.0.0", clients_file=str(clients)))
    with pytest.raises(ConfigError, match="no client is configured"):
        refuse_unsafe_start(Settings(gateway_host="10.1.2.3"))
    save_clients(clients, ClientsFile(clients=[Client(id="a", disabled=True, scope=Scope(targets=["10.0.0.0/24"]))]))
    with pytest.raises(ConfigError, match="no client is configured"):
        refuse_unsafe_start(Settings(gateway_host="0.0.0.0", clients_file=str(clients)))
    save_clients(clients, ClientsFile(clients=[Client(id="a", scope=Scope(targets=["10.0.0.0/24"]))]))
    refuse_unsafe_start(Settings(gateway_host="0.0.0.0", clients_file=str(clients)))


def test_loopback_may_start_without_clients_but_not_with_a_broken_file(tmp_path: Path) -> None:
    refuse_unsafe_start(Settings(gateway_host="127.0.0.1"))
    broken = tmp_path / "clients.yaml"
    broken.write_text("clients: [{id: 'not ok'}]")
    with pytest.raises(ConfigError, match="clients file"):
        refuse_unsafe_start(Settings(gateway_host="127.0.0.1", clients_file=str(broken)))
