"""Two agents share one scanner: a flood from one no longer delays the other's scan.

dmz has one scanner with one slot. Agent A queues six scans; agent B then queues one. Under
first in, first out B would start after all of A's; under fair shares it takes the next free
slot, ahead of A's waiting scans.
"""

from __future__ import annotations

import msgspec
import pytest

from scanfleet.cli.stack import Stack
from scanfleet.common import contract
from scanfleet.common.clients import Role
from scanfleet.common.scope import Scope
from scanfleet.common.tasks import TaskRecord
from tests.helpers import add_client, arest, long_scan, stack_js, wait_terminal

pytestmark = pytest.mark.e2e


def agent(stack: Stack, client_id: str) -> str:
    scope = Scope(targets=["10.80.0.0/16"], pools=["dmz"], max_active=50, submissions_per_minute=100)
    return add_client(stack.clients_file, client_id, Role.AGENT, scope)


async def test_a_flood_from_one_agent_does_not_delay_another_agents_scan(stack: Stack) -> None:
    flooder, other = agent(stack, "flooding-agent"), agent(stack, "other-agent")
    async with arest(stack, flooder) as a, arest(stack, other) as b:
        flood = []
        for i in range(6):
            response = await a.post(
                "/v1/scans",
                json={"targets": f"10.80.0.{i + 1}", "name": f"flood {i}", "description": long_scan(1.5)},
            )
            assert response.status_code == 202, response.text
            flood.append(response.json()["task_id"])
        response = await b.post("/v1/scans", json={"targets": "10.80.1.1", "name": "mine", "description": long_scan(1)})
        assert response.status_code == 202, response.text
        mine = response.json()["task_id"]
        assert response.json()["scanner_pool"] == "dmz"

        assert (await wait_terminal(stack, mine, within=90))[-1] == "completed"
        for task_id in flood:
            assert (await wait_terminal(stack, task_id, within=120))[-1] == "completed"
    started = {}
    async with stack_js(stack) as js:
        tasks = await js.key_value(contract.TASKS_BUCKET)
        for task_id in [*flood, mine]:
            entry = await tasks.get(task_id)
            record = msgspec.json.decode(entry.value or b"", type=TaskRecord)
            assert record.dispatched_at is not None
            started[task_id] = record.dispatched_at
    overtook = [t for t in flood if started[t] > started[mine]]
    # At most the flood's first scan (running, or planned as B arrived) and one more went first.
    assert len(overtook) >= len(flood) - 2, f"the other agent's scan waited behind the flood: {started}"
