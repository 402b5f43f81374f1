"""A scanner that hands back a truncated or garbage export: the task fails with the validator's
reason and a dead letter, once, and nothing keeps retrying it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import msgspec
import nats
import pytest
from nats.js.errors import NotFoundError

from scanfleet.cli.stack import Stack
from scanfleet.common import contract
from scanfleet.common.messages import DeadLetter
from tests.helpers import emulator_scan, mcp_client, scanner_named, slot_holders, tool_json, wait_terminal

pytestmark = pytest.mark.e2e

POOL, INSTANCE = "default", "scanner-2"


def faults(stack: Stack, body: dict[str, object]) -> None:
    scanner = scanner_named(stack, POOL, INSTANCE)
    access, secret = stack.secrets[scanner]
    response = httpx.post(
        f"{stack.emulator_url(scanner)}/_emulator/faults",
        json=body,
        headers={"X-ApiKeys": f"accessKey={access}; secretKey={secret}"},
    )
    response.raise_for_status()


@pytest.fixture
def corrupt(stack: Stack, request: pytest.FixtureRequest) -> Iterator[str]:
    faults(stack, {"export_corrupt": request.param})
    try:
        yield str(request.param)
    finally:
        faults(stack, {"clear_export_corrupt": True})


@pytest.mark.parametrize("corrupt", ["truncate", "garbage"], indirect=True)
async def test_corrupt_export_fails_the_task_once_with_a_dead_letter(stack: Stack, corrupt: str) -> None:
    async with mcp_client(stack) as mcp:
        task = tool_json(
            await mcp.call_tool(
                "run_untrusted_scan",
                {"targets": "10.90.0.1,10.90.0.2", "name": f"corrupt {corrupt}", "scanner_instance": INSTANCE},
            )
        )
        task_id = task["task_id"]
        kinds = await wait_terminal(stack, task_id, within=60)
        status = tool_json(await mcp.call_tool("get_scan_status", {"task_id": task_id}))
    assert kinds[-1] == "failed" and kinds.count("exporting") == 1 and kinds.count("validating") == 1
    assert status["status"] == "failed" and status["error_reason"] == "xml_invalid"
    assert "not well-formed" in status["error_message"]

    nc = await nats.connect(stack.nats.url)
    try:
        js = nc.jetstream()
        raw = await js.get_last_msg(contract.DLQ_STREAM, contract.dlq_subject("validator", task_id))
        letter = msgspec.json.decode(raw.data or b"", type=DeadLetter)
        assert (letter.task_id, letter.stage, letter.reason) == (task_id, "validator", "xml_invalid")
        assert letter.original_stream == contract.EVENTS_STREAM and letter.attempts == 1
        with pytest.raises(NotFoundError):
            await js.get_last_msg(contract.ASSIGNMENTS_STREAM, contract.assignment_subject(POOL, INSTANCE, task_id))
        info = await js.consumer_info(contract.EVENTS_STREAM, contract.VALIDATOR_CONSUMER)
        assert info.num_ack_pending == 0 and info.num_redelivered == 0, "the export event was judged once, for good"
    finally:
        await nc.close()
    scan = emulator_scan(stack, POOL, INSTANCE, task_id)
    assert scan["launches"] == 1 and scan["status"] == "completed"
    assert task_id not in await slot_holders(stack, POOL, INSTANCE)
