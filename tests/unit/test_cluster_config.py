"""Settings and server configuration for a cluster: several URLs, replicas, routes, shared MCP keys."""

from __future__ import annotations

from scanfleet.common import contract
from scanfleet.common.config import Settings
from scanfleet.common.nats_auth import (
    CLUSTER_PING_INTERVAL,
    CLUSTER_PING_MAX,
    DEPLOY_NODES,
    ClusterRoutes,
    deploy_config,
    server_config,
)


def test_nats_url_may_list_every_server_of_a_cluster() -> None:
    settings = Settings.from_env(
        {"SCANFLEET_NATS_URL": "nats://n1:4222, nats://n2:4222,nats://n3:4222", "SCANFLEET_NATS_REPLICAS": "3"}
    )
    assert settings.nats_urls == ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]
    assert settings.nats_replicas == 3
    assert Settings().nats_replicas == 1


def test_the_shared_request_state_keys_are_read_and_never_shown() -> None:
    settings = Settings.from_env({"SCANFLEET_MCP_REQUEST_STATE_KEYS": "k-new,k-old"})
    assert settings.mcp_request_state_keys == "k-new,k-old"
    assert "k-new" not in repr(settings) and "mcp_request_state_keys='<set>'" not in repr(Settings())


def test_every_stream_of_the_topology_gets_the_replicas() -> None:
    streams = contract.Topology(replicas=3).streams()
    assert streams and {s.num_replicas for s in streams} == {3}
    assert {s.num_replicas for s in contract.Topology().streams()} == {1}


def test_server_config_renders_routes_and_sync_interval() -> None:
    routes = ClusterRoutes(name="c", listen="127.0.0.1:6301", routes=["nats-route://127.0.0.1:6301"] * 3)
    text = server_config({}, listen="127.0.0.1:4301", monitor="127.0.0.1:8301", store_dir="/s", server_name="n1",
                         cluster=routes, sync_interval="always")  # fmt: skip
    assert 'server_name: "n1"' in text and 'sync_interval: "always"' in text
    assert 'listen: "127.0.0.1:6301"' in text and text.count("nats-route://127.0.0.1:6301") == 3


def test_the_deploy_cluster_config_routes_to_all_three_nodes_and_syncs_always() -> None:
    text = deploy_config(cluster=True)
    assert "server_name: $NATS_SERVER_NAME" in text and 'sync_interval: "always"' in text
    assert all(f"nats-route://{node}:6222" in text for node in DEPLOY_NODES)
    assert "cluster" not in deploy_config()


def test_a_clusters_servers_ping_peers_and_clients_within_seconds() -> None:
    """A server cut off by the network closes nothing: the others find out by pings only."""
    text = deploy_config(cluster=True)
    assert f'ping_interval: "{CLUSTER_PING_INTERVAL}"' in text and f"ping_max: {CLUSTER_PING_MAX}" in text
    assert "ping_interval" not in deploy_config()
