"""Pure access decisions: who sees which task, the submission rate, messages that never quote values."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scanfleet.common.clients import (
    Client,
    ClientDirectory,
    ClientsError,
    ClientsFile,
    Principal,
    Role,
    issue_token,
    load_clients,
    save_clients,
    token_id_of,
)
from scanfleet.common.scope import CompiledScope, Scope
from scanfleet.common.tasks import TaskRecord
from scanfleet.gateway.access import Caller, RateLimiter, can_see_pool, can_see_task
from scanfleet.gateway.errors import safe_message


def caller(client_id: str, role: Role, pools: list[str] | None = None) -> Caller:
    scope = Scope(targets=["10.0.0.0/8"], pools=pools or ["*"])
    return Caller(Principal(Client(id=client_id, role=role, scope=scope), CompiledScope.of(scope), "test"))


def task(owner: str, pool: str) -> TaskRecord:
    now = datetime.now(UTC)
    return TaskRecord(
        task_id="t1", trace_id="x", pool=pool, targets=["10.0.0.1"], name="n",
        created_at=now, updated_at=now, submitted_by=owner,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        (caller("alice", Role.AGENT), True),
        (caller("bob", Role.AGENT), False),
        (caller("bob", Role.AGENT, ["default"]), False),
        (caller("ops", Role.OPERATOR, ["default"]), True),
        (caller("ops", Role.OPERATOR, ["dmz"]), False),
        (caller("ops", Role.OPERATOR), True),
        (caller("root", Role.ADMIN, ["dmz"]), True),
    ],
)
def test_who_sees_alices_task_in_the_default_pool(who: Caller, expected: bool) -> None:
    assert can_see_task(who, task("alice", "default")) is expected


def test_a_task_without_a_submitter_belongs_to_no_agent() -> None:
    assert not can_see_task(caller("alice", Role.AGENT), task("", "default"))
    assert can_see_pool(caller("alice", Role.AGENT, ["dmz"]), "dmz")
    assert not can_see_pool(caller("alice", Role.AGENT, ["dmz"]), "default")


def test_rate_limiter_slides_and_says_when_to_retry() -> None:
    now = [1000.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.retry_after("a", 3) for _ in range(3)] == [None, None, None]
    assert limiter.retry_after("a", 3) == 60
    assert limiter.retry_after("b", 3) is None
    now[0] += 30
    assert limiter.retry_after("a", 3) == 30
    now[0] += 30.5
    assert limiter.retry_after("a", 3) is None
    assert limiter.retry_after("z", 0) == 60


def test_validation_messages_keep_paths_and_types_but_drop_values() -> None:
    assert safe_message("Invalid enum value 'hunter2' - at `$.credentials.escalation`") == (
        "Invalid enum value <value> - at `$.credentials.escalation`"
    )
    assert safe_message("Expected `str`, got `int` - at `$.name`") == "Expected `str`, got `int` - at `$.name`"


def test_tokens_have_a_public_id_and_a_secret() -> None:
    assert token_id_of("sf_abc123_secret") == "abc123"
    assert token_id_of("sf_abc123_") is None
    assert token_id_of("xx_abc_def") is None
    assert token_id_of("eyJhbGciOi.x.y") is None


def test_a_broken_edit_keeps_the_last_good_clients(tmp_path: Path) -> None:
    path = tmp_path / "clients.yaml"
    data = ClientsFile(clients=[Client(id="a", scope=Scope(targets=["10.0.0.0/24"]))])
    token = issue_token(data, "a")
    save_clients(path, data)
    directory = ClientDirectory(path)
    assert directory.by_token(token) is not None
    path.write_text("clients: [ {id: a, scope: {targets: [not-a-range!]}} ]\n")
    os.utime(path, ns=(1, 1))
    assert directory.by_token(token) is not None
    assert directory.error is not None and "not-a-range" in directory.error
    path.unlink()
    assert directory.by_token(token) is None and not directory.configured


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("clients: [{id: 'a b'}]", "client id"),
        ("clients: [{id: a}, {id: a}]", "listed twice"),
        ("clients: [{id: a, scope: {targets: [example.com]}}]", "host name"),
        ("clients: [{id: a, role: root}]", "role"),
        ("deny: [10.0.0.0/33]", "deny"),
        ("clients: [{id: a, scopes: {}}]", "scopes"),
    ],
)
def test_clients_file_mistakes_are_named(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "clients.yaml"
    path.write_text(text)
    with pytest.raises(ClientsError) as caught:
        load_clients(path)
    assert fragment in str(caught.value)
