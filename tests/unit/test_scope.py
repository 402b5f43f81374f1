"""Scope checks against an oracle built on Python's ``ipaddress``, address by address."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanfleet.common.messages import ScanType
from scanfleet.common.scope import (
    ALWAYS_DENIED,
    CompiledScope,
    DenyList,
    IPAddress,
    Scope,
    ScopeRefusal,
    Submission,
    check_submission,
    name_matches,
)
from scanfleet.common.targets import parse_targets
from tests.helpers import oracle_in_scope, scope_networks, scope_targets


@settings(max_examples=400, deadline=None)
@given(
    allowed=st.lists(scope_networks(), min_size=1, max_size=4),
    exclude=st.lists(scope_networks(), max_size=2),
    wanted=st.lists(scope_targets(), min_size=1, max_size=3),
)
def test_accepted_exactly_when_every_address_is_in_scope(
    allowed: list[str], exclude: list[str], wanted: list[str]
) -> None:
    scope = CompiledScope.of(Scope(targets=allowed, exclude=exclude, max_targets=1 << 20))
    parsed = parse_targets(wanted)
    try:
        check_submission(Submission(parsed, "untrusted", "default"), scope, DenyList.build())
        accepted = True
    except ScopeRefusal as refusal:
        accepted = False
        assert refusal.target in {t.text for t in parsed}
    assert accepted == oracle_in_scope([t.text for t in parsed], allowed, [*ALWAYS_DENIED, *exclude])


def check(
    targets: str,
    scope: Scope,
    *,
    scan_type: ScanType = "untrusted",
    pool: str = "default",
    credential_ref: str | None = None,
    resolved: dict[str, list[IPAddress]] | None = None,
) -> None:
    submission = Submission(parse_targets(targets), scan_type, pool, credential_ref)
    check_submission(submission, CompiledScope.of(scope), DenyList.build(), resolved)


LAB = Scope(targets=["10.0.0.0/28"], hostnames=["*.lab.example", "web.example"], max_targets=64)


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("10.0.1.1", "target_out_of_scope"),
        ("10.0.0.0/27", "target_out_of_scope"),
        ("169.254.169.254", "target_denied"),
        ("127.0.0.1", "target_denied"),
        ("::1", "target_denied"),
        ("::ffff:10.0.0.1", "target_denied"),
        ("0.0.0.0", "target_denied"),
        ("255.255.255.255", "target_denied"),
        ("224.0.0.1", "target_denied"),
        ("fe80::1", "target_denied"),
        ("localhost", "target_denied"),
        ("api.localhost", "target_denied"),
        ("8.8.8.8", "target_out_of_scope"),
        ("lab.example", "target_out_of_scope"),
        ("evil.example", "target_out_of_scope"),
    ],
)
def test_refusals_name_the_target(target: str, code: str) -> None:
    with pytest.raises(ScopeRefusal) as caught:
        check(target, LAB)
    assert caught.value.code == code
    assert caught.value.target is not None


def test_in_scope_targets_pass() -> None:
    check("10.0.0.1, 10.0.0.2-14, 10.0.0.8/29, db.lab.example, WEB.example.", LAB)


def test_a_name_that_resolves_into_denied_space_is_refused() -> None:
    loopback = [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(ScopeRefusal) as caught:
        check("db.lab.example", LAB, resolved={"db.lab.example": loopback})
    assert caught.value.code == "target_denied"
    check("db.lab.example", LAB, resolved={"db.lab.example": [ipaddress.ip_address("10.9.9.9")]})


@pytest.mark.parametrize(
    ("scope", "kw", "code"),
    [
        (LAB, {"scan_type": "authenticated"}, "scan_type_not_allowed"),
        (Scope(targets=["10.0.0.0/28"], pools=["dmz"]), {}, "pool_not_allowed"),
        (
            Scope(targets=["10.0.0.0/28"], scan_types=["authenticated"], credential_refs=["a"]),
            {"scan_type": "authenticated", "credential_ref": "b"},
            "credential_ref_not_allowed",
        ),
        (Scope(targets=["10.0.0.0/24"], max_targets=4), {}, "scan_too_large"),
        (Scope(), {}, "no_scope"),
    ],
)
def test_other_refusals(scope: Scope, kw: dict[str, Any], code: str) -> None:
    with pytest.raises(ScopeRefusal) as caught:
        check("10.0.0.0/29", scope, **kw)
    assert caught.value.code == code


def test_adjacent_ranges_merge_and_the_deny_list_has_infrastructure() -> None:
    scope = Scope(targets=["10.0.0.0/25", "10.0.0.128/25"], max_targets=512)
    check("10.0.0.0/24", scope)
    deny = DenyList.build(infrastructure=[ipaddress.ip_address("10.0.0.7")])
    with pytest.raises(ScopeRefusal) as caught:
        check_submission(Submission(parse_targets("10.0.0.0/29"), "untrusted", "p"), CompiledScope.of(scope), deny)
    assert "infrastructure" in caught.value.message


@pytest.mark.parametrize(
    ("name", "pattern", "expected"),
    [
        ("a.lab.example", "*.lab.example", True),
        ("a.b.lab.example", "*.lab.example", True),
        ("lab.example", "*.lab.example", False),
        ("xlab.example", "*.lab.example", False),
        ("LAB.example.", "lab.example", True),
    ],
)
def test_name_patterns(name: str, pattern: str, expected: bool) -> None:
    assert name_matches(name, pattern) is expected
