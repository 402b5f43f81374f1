"""docs/agents.md's tool reference is what the gateway publishes: regenerate it when a tool changes.

Rewrite it with ``SCANFLEET_WRITE_DOCS=1 .venv/bin/python -m pytest tests/integration/test_agent_docs.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from scanfleet.common.clients import ClientDirectory
from scanfleet.common.runtime import Runtime
from scanfleet.gateway.agent_docs import EXAMPLES, splice, tool_reference
from scanfleet.gateway.auth import Authenticator
from scanfleet.gateway.errors import NEXT_STEPS
from scanfleet.gateway.guard import Guard
from scanfleet.gateway.results import Results
from scanfleet.gateway.tools import build_mcp
from tests.helpers import make_gateway

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "agents.md"


async def test_the_guide_documents_every_tool_as_published(runtime: Runtime) -> None:
    gateway = make_gateway(runtime)
    async with httpx.AsyncClient() as http:
        guard = Guard(runtime, Authenticator(ClientDirectory(None), "http://127.0.0.1:1/mcp", http))
        mcp = build_mcp(gateway, Results(gateway), guard)
        tools = await mcp.list_tools()
    current = GUIDE.read_text()
    expected = splice(current, tool_reference(tools))
    if os.environ.get("SCANFLEET_WRITE_DOCS") == "1":
        GUIDE.write_text(expected)
    assert current == expected, "docs/agents.md is stale: rerun this test with SCANFLEET_WRITE_DOCS=1"
    assert {t.name for t in tools} == EXAMPLES.keys(), "every tool has an example in the guide"
    for tool in tools:
        assert f"### `{tool.name}`" in current
    for code in NEXT_STEPS:
        assert f"| `{code}` |" in current
