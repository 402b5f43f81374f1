"""Provisioning on a real server: idempotent, and it brings changed definitions up to date."""

from __future__ import annotations

import asyncio
import dataclasses

import nats
import pytest
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from scanfleet.common import capacity, contract
from scanfleet.common.bus import ensure_stream, kv_create, kv_get, kv_items, provision, put_object_stream
from scanfleet.common.config import parse_fleet
from scanfleet.common.registry import fleet_view, read_fleet_meta, sync_registry
from scanfleet.common.runtime import Runtime
from tests.helpers import until


async def test_provision_twice_changes_nothing(runtime: Runtime) -> None:
    before = {s.config.name: s.created for s in await runtime.js.streams_info()}
    topology = contract.Topology({"default": ["scanner-1", "scanner-2"], "dmz": ["scanner-3"]})
    assert await provision(runtime.js, topology) == []
    after = {s.config.name: s.created for s in await runtime.js.streams_info()}
    assert before == after
    assert set(after) >= {
        "SCAN_REQUESTS",
        "SCAN_ASSIGNMENTS",
        "SCAN_EVENTS",
        "SCAN_DLQ",
        "SCAN_ADVISORIES",
        "KV_scan_tasks",
        "KV_scan_capacity",
        "OBJ_scan_exports",
    }
    consumers = {c.name for c in await runtime.js.consumers_info(contract.ASSIGNMENTS_STREAM)}
    assert consumers == {"agent-default-scanner-1", "agent-default-scanner-2", "agent-dmz-scanner-3"}


async def test_a_changed_stream_definition_is_applied(runtime: Runtime) -> None:
    wanted = next(s for s in contract.STREAMS if s.name == contract.DLQ_STREAM)
    changed = dataclasses.replace(wanted, max_age=3600.0)
    await ensure_stream(runtime.js, changed)
    assert (await runtime.js.stream_info(contract.DLQ_STREAM)).config.max_age == pytest.approx(3600.0)
    await ensure_stream(runtime.js, wanted)
    assert (await runtime.js.stream_info(contract.DLQ_STREAM)).config.max_age == pytest.approx(30 * contract.DAY)


async def test_a_changed_consumer_definition_is_applied(runtime: Runtime) -> None:
    config = contract.dispatch_consumer("default")
    config.max_deliver = 7
    await runtime.js.add_consumer(contract.REQUESTS_STREAM, config)
    info = await runtime.js.consumer_info(contract.REQUESTS_STREAM, "dispatch-default")
    assert info.config.max_deliver == 7


async def test_registry_sync_keeps_slots_held_across_a_limit_change(runtime: Runtime) -> None:
    def fleet(limit: int) -> object:
        return parse_fleet(
            {
                "default_pool": "default",
                "pools": {
                    "default": {
                        "scanners": [
                            {
                                "id": "scanner-1",
                                "url": "https://admin:hunter2@nessus-1:8834/",
                                "auth": {"access_key": "a", "secret_key": "b"},
                                "max_concurrent_scans": limit,
                            }
                        ]
                    }
                },
            },
            source="test",
            env={},
        )

    await sync_registry(runtime.registry, runtime.capacity, fleet(2))  # type: ignore[arg-type]
    assert await capacity.reserve(runtime.capacity, "default.scanner-1", "t1")
    await sync_registry(runtime.registry, runtime.capacity, fleet(3))  # type: ignore[arg-type]
    views = await fleet_view(runtime.registry, runtime.capacity, runtime.agents)
    assert [(v.key, v.slots.limit, v.slots.tasks) for v in views] == [("default.scanner-1", 3, ["t1"])]
    assert views[0].entry.url == "https://nessus-1:8834/"
    assert not views[0].usable  # no agent lease yet
    meta = await read_fleet_meta(runtime.registry)
    assert meta is not None and meta.default_pool == "default"


async def expired(kv: KeyValue, key: str) -> bool:
    """Polled: what is under test is what ``kv_get`` reads after the server's TTL, not what a watch sees."""
    return await kv_get(kv, key) is None


async def test_kv_create_over_an_expired_key(runtime: Runtime) -> None:
    """nats-py 2.16 leaves a value-less marker after a TTL expiry; create must still work."""
    kv = runtime.agents
    await kv.create("default.scanner-1", b"one", msg_ttl=1)
    await until(lambda: expired(kv, "default.scanner-1"), "the server to expire the key", within=40.0, every=0.2)
    await kv_create(kv, "default.scanner-1", b"two")
    entry = await kv_get(kv, "default.scanner-1")
    assert entry is not None and entry.value == b"two"


async def test_kv_create_of_a_key_a_lagging_replica_reads_as_absent_is_refused_as_existing(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused by the leader (the key exists), nats-py's create reads the key; a replica just
    back from a partition answers "not found". That is still a compare-and-set refusal, which
    callers retry, not a KeyNotFoundError out of a create."""
    kv = runtime.agents
    await kv.create("default.scanner-2", b"one")

    async def lagging_replica(key: str, revision: int | None = None) -> KeyValue.Entry:
        raise KeyNotFoundError

    monkeypatch.setattr(kv, "_get", lagging_replica)
    with pytest.raises(KeyWrongLastSequenceError):
        await kv_create(kv, "default.scanner-2", b"two")
    monkeypatch.undo()
    entry = await kv_get(kv, "default.scanner-2")
    assert entry is not None and entry.value == b"one"


async def test_kv_items_sees_live_keys_only_and_leaves_no_consumer(runtime: Runtime) -> None:
    """A stream holds at most 1000 consumers; nats-py's keys() leaks one per call for 5 minutes."""
    kv = runtime.agents
    await kv.put("default.kept", b"1")
    await kv.put("default.kept", b"2")
    await kv.put("default.deleted", b"x")
    await kv.delete("default.deleted")
    await kv.put("default.purged", b"x")
    await kv.purge("default.purged")
    await kv.create("default.expired", b"x", msg_ttl=1)
    await until(lambda: expired(kv, "default.expired"), "the server to expire the key", within=40.0, every=0.2)

    for _ in range(1_100):
        assert await kv_items(kv) == {"default.kept": b"2"}
    info = await runtime.js.stream_info(f"KV_{contract.AGENTS_BUCKET}")
    assert info.state.consumer_count == 0


async def test_streamed_object_round_trip_and_overwrite(runtime: Runtime) -> None:
    async def chunks(parts: list[bytes]):  # type: ignore[no-untyped-def]
        for part in parts:
            yield part

    first = [b"x" * 100_000, b"y" * 200_000, b"z"]
    stored = await put_object_stream(runtime.js, contract.EXPORTS_OBJECTS, "t1.nessus", chunks(first))
    assert stored.size == 300_001
    store = await runtime.js.object_store(contract.EXPORTS_OBJECTS)
    assert (await store.get("t1.nessus")).data == b"".join(first)
    second = [b"short"]
    await put_object_stream(runtime.js, contract.EXPORTS_OBJECTS, "t1.nessus", chunks(second))
    assert (await store.get("t1.nessus")).data == b"short"
    info = await runtime.js.stream_info("OBJ_scan_exports")
    assert info.state.messages == 2  # one chunk and one meta: the first version's chunks are gone


async def test_capacity_reservations_never_exceed_the_limit(runtime: Runtime) -> None:
    await capacity.ensure_limit(runtime.capacity, "default.scanner-1", 3)
    conns = [await nats.connect(runtime.settings.nats_url) for _ in range(3)]
    try:
        kvs = [await c.jetstream().key_value(contract.CAPACITY_BUCKET) for c in conns]
        results = await asyncio.gather(*(capacity.reserve(kvs[i % 3], "default.scanner-1", f"t{i}") for i in range(30)))
    finally:
        for c in conns:
            await c.close()
    slots = (await capacity.read_all(runtime.capacity))["default.scanner-1"]
    assert len(slots.tasks) <= 3
    assert sum(results) == len(slots.tasks)
    holder = slots.tasks[0]
    assert await capacity.reserve(runtime.capacity, "default.scanner-1", holder)  # idempotent
    assert await capacity.release(runtime.capacity, "default.scanner-1", holder)
    assert await capacity.release(runtime.capacity, "default.scanner-1", holder)  # idempotent
    after = (await capacity.read_all(runtime.capacity))["default.scanner-1"]
    assert holder not in after.tasks and len(after.tasks) == len(slots.tasks) - 1
    assert after.limit == 3
