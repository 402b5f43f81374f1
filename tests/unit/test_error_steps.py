"""Every refusal code the gateway can give has next steps in the one table (errors.NEXT_STEPS)."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from scanfleet.common.messages import RestartRefusal
from scanfleet.common.scope import RefusalCode
from scanfleet.gateway.errors import NEXT_STEPS, GatewayError

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    *ROOT.glob("services/gateway/scanfleet/gateway/*.py"),
    ROOT / "libs/common/scanfleet/common/admin_ops.py",
    ROOT / "libs/common/scanfleet/common/scanner_ops.py",
]
RAISED = re.compile(r"(?:GatewayError|QueryError|AdminError)\(\s*(?:\d+,\s*)?\"([a-z_]+)\"")
RETURNED = re.compile(r"return \d+, \"([a-z_]+)\"")


def test_every_code_in_the_source_has_next_steps() -> None:
    codes = {code for path in SOURCES for code in RAISED.findall(path.read_text()) + RETURNED.findall(path.read_text())}
    codes |= set(typing.get_args(RefusalCode))
    codes |= set(typing.get_args(RestartRefusal))  # an agent's answer to a restart request
    codes |= {f"cannot_{action}" for action in ("cancel", "pause", "resume")}
    codes |= {"invalid_host", "invalid_origin", "confirmation_required", "not_confirmed", "internal_error"}
    assert len(codes) > 40
    missing = sorted(codes - NEXT_STEPS.keys())
    assert not missing, f"codes without next steps: {missing}"


def test_a_refusal_carries_its_next_steps() -> None:
    refusal = GatewayError(404, "task_not_found", "no task 'x'", hint=1).as_dict()
    assert refusal == {
        "error": "task_not_found",
        "message": "no task 'x'",
        "hint": 1,
        "next_steps": NEXT_STEPS["task_not_found"],
    }
    assert GatewayError(400, "something_new", "m").as_dict()["next_steps"]
