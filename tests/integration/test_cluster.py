"""A three-node JetStream cluster on loopback: replicas provisioned and raised in place,
services connecting with every server's URL, and a submission surviving its server's death."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.errors import Error as NatsError
from nats.js.api import PubAck

from scanfleet.common import contract
from scanfleet.common.bus import provision
from scanfleet.common.config import Settings
from scanfleet.common.embedded import NatsCluster
from scanfleet.common.runtime import close, open_runtime
from tests.helpers import until

TOPOLOGY = contract.Topology({"default": ["scanner-1"]})


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster")
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop(kill=True)


async def test_an_r1_deployment_is_brought_to_three_replicas_and_reports_it(cluster: NatsCluster) -> None:
    rt = await open_runtime("test", Settings(nats_url=cluster.nats_url), topology=TOPOLOGY)
    try:
        assert any(change.startswith("created stream SCAN_REQUESTS") for change in rt.provisioned)
        assert (await rt.js.stream_info(contract.REQUESTS_STREAM)).config.num_replicas == 1
        assert (await rt.js.stream_info(contract.kv_stream(contract.TASKS_BUCKET))).config.allow_direct is True

        changes = await provision(rt.js, dataclasses.replace(TOPOLOGY, replicas=3))

        streams = {s.name for s in TOPOLOGY.streams() if s.name}
        buckets = {contract.kv_stream(b.name) for b in contract.BUCKETS}
        stores = {contract.object_stream(o.name) for o in contract.OBJECT_STORES}
        for name in streams | buckets | stores:
            info = await rt.js.stream_info(name)
            assert info.config.num_replicas == 3, name
        assert f"updated stream {contract.REQUESTS_STREAM} (replicas 1 -> 3)" in changes
        assert f"updated bucket {contract.TASKS_BUCKET} (replicas 1 -> 3)" in changes
        assert f"updated object store {contract.OBJECT_STORES[0].name} (replicas 1 -> 3)" in changes
        assert len([c for c in changes if "replicas 1 -> 3" in c]) == len(streams | buckets | stores)
        assert await provision(rt.js, dataclasses.replace(TOPOLOGY, replicas=3)) == []
        # Replicated buckets are read from their leader: a follower's direct get may miss the last write.
        for bucket in buckets:
            assert (await rt.js.stream_info(bucket)).config.allow_direct is False, bucket
    finally:
        await close(rt)


async def test_services_fail_over_to_another_server_of_the_cluster(cluster: NatsCluster) -> None:
    settings = Settings(nats_url=cluster.nats_url, nats_replicas=3)
    rt = await open_runtime("test", settings, topology=TOPOLOGY)
    try:
        served_by = rt.nc.connected_url
        assert served_by is not None
        victim = next(s for s in cluster.servers if s.port == served_by.port)
        await rt.tasks.kv.put("before", b"1")
        victim.stop(kill=True)

        async def moved() -> bool:
            url = rt.nc.connected_url
            return bool(rt.nc.is_connected and url is not None and url.port != victim.port)

        # A publish written to the dying connection is lost with it (services retry); wait for the move.
        await until(moved, "the client to reconnect to another server", within=20.0)

        async def published() -> PubAck | None:
            # Until the stream's group has a leader again JetStream has no responder; a retry with
            # the same message id is stored once.
            try:
                return await rt.js.publish(
                    contract.request_subject("default", "t-after"),
                    b"{}",
                    timeout=5,
                    headers={contract.HDR_MSG_ID: "t-after"},
                )
            except NatsError:
                return None

        ack = await until(published, "the stream to take a publish again", within=30.0)
        assert ack is not None and ack.stream == contract.REQUESTS_STREAM

        async def read_back() -> bytes | None:
            # While the bucket's group elects a new leader the server answers "stream not found";
            # services retry reads the same way.
            try:
                return (await rt.tasks.kv.get("before")).value
            except NatsError:
                return None

        assert await until(read_back, "the value written before the failover", within=20.0) == b"1"
        victim.start()
        cluster.wait_formed()
    finally:
        await close(rt)


async def test_a_service_started_while_the_cluster_has_no_quorum_waits_for_it(
    cluster: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A service restarted in the middle of a failover finds JetStream unanswering: it tries
    again instead of exiting, and opens once the cluster has its quorum back."""
    for server in cluster.servers[1:]:
        server.stop(kill=True)
    settings = Settings(nats_url=cluster.nats_url, nats_replicas=3)
    with caplog.at_level(logging.WARNING, logger="scanfleet.runtime"):
        opening = asyncio.create_task(open_runtime("test", settings, topology=TOPOLOGY))

        async def waiting() -> bool:
            assert not opening.done() or opening.exception() is None, opening.exception()
            return "did not answer provisioning" in caplog.text

        await until(waiting, "the service to wait for JetStream", within=30.0)
        await asyncio.to_thread(cluster.start)
        rt = await asyncio.wait_for(opening, 60.0)
    try:
        assert (await rt.js.stream_info(contract.REQUESTS_STREAM)).config.num_replicas == 3
    finally:
        await close(rt)


async def test_a_server_that_goes_silent_is_left_by_clients_and_routes_within_seconds(cluster: NatsCluster) -> None:
    """A server that stops answering but closes nothing (SIGSTOP: frozen, as one cut off by the
    network while it keeps running; no TCP reset ever comes). Services notice by their pings
    and move to another server; the other servers drop their routes to it by theirs, after
    which no request is routed to it any more (it replicated the bucket, so direct gets went
    there too) and every read is answered. With NATS's defaults both took minutes."""
    rt = await open_runtime("test", Settings(nats_url=cluster.nats_url, nats_replicas=3), topology=TOPOLOGY)
    served_by = rt.nc.connected_url
    assert served_by is not None
    victim = next(s for s in cluster.servers if s.port == served_by.port)
    assert victim.proc is not None
    try:
        await rt.tasks.kv.put("before", b"1")
        victim.proc.send_signal(signal.SIGSTOP)

        async def moved() -> bool:
            url = rt.nc.connected_url
            return bool(rt.nc.is_connected and url is not None and url.port != victim.port)

        await until(moved, "the client to leave the silent server", within=30.0, every=0.2)

        async def reads_answered() -> bool:
            """Ten reads in a row, each answered within a second."""
            for _ in range(10):
                try:
                    entry = await asyncio.wait_for(rt.tasks.kv.get("before"), 1.0)
                except (NatsError, TimeoutError):
                    return False
                assert entry.value == b"1"
            return True

        await until(reads_answered, "every read to be answered without the silent server", within=40.0, every=0.2)
    finally:
        victim.proc.send_signal(signal.SIGCONT)
        await close(rt)
