"""The tool reference of ``docs/agents.md``, generated from what ``tools/list`` publishes (titles,
annotations, input and output schemas) and from the error table, so the guide cannot drift."""

from __future__ import annotations

import inspect
from typing import Any

import msgspec
from mcp.types import Tool

from scanfleet.gateway.errors import NEXT_STEPS

EXAMPLES: dict[str, dict[str, Any]] = {
    "run_untrusted_scan": {"targets": "10.0.0.0/28", "name": "weekly web tier"},
    "run_authenticated_scan": {
        "targets": "10.0.0.5",
        "name": "patch audit",
        "scan_type": "authenticated_privileged",
        "credential_ref": "linux-audit",
        "escalation": "sudo",
    },
    "get_scan_status": {"task_id": "<task_id>", "wait_seconds": 50},
    "list_tasks": {"status": ["running", "queued"], "limit": 10},
    "list_scanners": {"scanner_pool": "default"},
    "list_pools": {},
    "get_scan_results": {"task_id": "<task_id>", "group_by": "plugin", "filters": {"severity": ">=3"}},
    "get_host_summary": {"task_id": "<task_id>", "host": "10.0.0.5"},
    "get_finding": {"task_id": "<task_id>", "host": "10.0.0.5", "plugin_id": 19506},
    "cancel_scan": {"task_id": "<task_id>", "reason": "wrong targets"},
    "pause_scan": {"task_id": "<task_id>"},
    "resume_scan": {"task_id": "<task_id>"},
    "get_pool_status": {},
    "get_queue_status": {"limit": 5},
    "schedule_scan": {
        "targets": "10.0.0.0/28",
        "name": "weekly web tier",
        "rrule": "FREQ=WEEKLY;BYDAY=MO;BYHOUR=3;BYMINUTE=0",
        "timezone": "Europe/Paris",
        "scan_type": "authenticated",
        "credential_ref": "linux-audit",
    },
    "list_schedules": {},
    "delete_schedule": {"schedule_id": "<schedule_id>"},
    "pause_schedule": {"schedule_id": "<schedule_id>"},
    "resume_schedule": {"schedule_id": "<schedule_id>"},
    "rescan": {"task_id": "<task_id>"},
    "rollover_scan": {"task_id": "<task_id>"},
    "compare_scans": {"base_task_id": "<last week's task_id>", "task_id": "<task_id>", "limit": 5},
    "scan_history": {"targets": "10.0.0.0/28", "limit": 5},
}
"""One call per tool, shown in the guide."""

BEGIN = "<!-- BEGIN GENERATED: tool reference (tests/integration/test_agent_docs.py) -->"
END = "<!-- END GENERATED -->"


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "anyOf" in schema:
        return " \\| ".join(_type(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return f"map of {_type(schema['additionalProperties'])}"
    return str(kind)


def _hints(tool: Tool) -> str:
    a = tool.annotations
    if a is None:
        return ""
    names = [
        ("read-only", a.read_only_hint),
        ("destructive", a.destructive_hint),
        ("idempotent", a.idempotent_hint),
        ("open-world", a.open_world_hint),
    ]
    return ", ".join(n for n, on in names if on) or "writes"


def tool_section(tool: Tool) -> list[str]:
    lines = [f"### `{tool.name}` — {tool.title}", "", f"*{_hints(tool)}*", ""]
    lines += [line.rstrip() for line in inspect.cleandoc(tool.description or "").splitlines()] + [""]
    example = msgspec.json.encode(EXAMPLES.get(tool.name, {})).decode()
    lines += [f"Example: `{example}`", ""]
    props: dict[str, Any] = tool.input_schema.get("properties", {})
    required = set(tool.input_schema.get("required", []))
    if props:
        lines += ["| argument | type | default |", "|---|---|---|"]
        for name, spec in props.items():
            default = "required" if name in required else f"`{spec.get('default')!r}`".replace("|", "\\|")
            lines.append(f"| `{name}` | {_type(spec)} | {default} |")
        lines.append("")
    output = tool.output_schema or {}
    fields = output.get("properties", {})
    if fields:
        needed = set(output.get("required", []))
        shown = ", ".join(f"`{k}`{'' if k in needed else '?'} ({_type(v)})" for k, v in fields.items())
        lines += [f"Returns `{output.get('title', 'object')}`: {shown}.", ""]
    return lines


def tool_reference(tools: list[Tool]) -> str:
    """The generated part of the guide: every tool, then every error code with its next steps."""
    lines = [BEGIN, "", "## Tool reference", ""]
    for tool in sorted(tools, key=lambda t: t.name):
        lines += tool_section(tool)
    lines += ["## Error codes", "", "| code | what to do |", "|---|---|"]
    lines += [f"| `{code}` | {steps} |" for code, steps in sorted(NEXT_STEPS.items())]
    lines += ["", END]
    return "\n".join(lines) + "\n"


def splice(document: str, reference: str) -> str:
    """The guide with its generated part replaced (appended if it has none yet)."""
    if BEGIN in document and END in document:
        head, _, rest = document.partition(BEGIN)
        _, _, tail = rest.partition(END + "\n")
        return head + reference + tail
    return document.rstrip("\n") + "\n\n" + reference
