"""AES-GCM sealing of target credentials: round trip, binding to the task, rotation, refusals."""

from __future__ import annotations

import base64

import pytest

from scanfleet.common.credentials import CredentialError, TargetCredential, dump, load, parse
from scanfleet.common.crypto import CredentialKeyError, Keyring, generate_key_spec

SECRET = b'{"username":"root","password":"s3cr3t-planted"}'


def test_round_trip_and_ciphertext_hides_the_secret() -> None:
    ring = Keyring.parse(generate_key_spec("k1"))
    sealed = ring.seal(SECRET, "task-1")
    assert sealed.key_id == "k1"
    assert b"s3cr3t" not in base64.urlsafe_b64decode(sealed.ciphertext)
    assert ring.open(sealed, "task-1") == SECRET


def test_sealing_twice_gives_different_ciphertexts() -> None:
    ring = Keyring.parse(generate_key_spec())
    assert ring.seal(SECRET, "t").ciphertext != ring.seal(SECRET, "t").ciphertext


def test_a_ciphertext_moved_to_another_task_does_not_open() -> None:
    ring = Keyring.parse(generate_key_spec())
    with pytest.raises(CredentialKeyError, match="do not open"):
        ring.open(ring.seal(SECRET, "task-1"), "task-2")


def test_tampered_ciphertext_does_not_open() -> None:
    ring = Keyring.parse(generate_key_spec())
    sealed = ring.seal(SECRET, "t")
    raw = bytearray(base64.urlsafe_b64decode(sealed.ciphertext))
    raw[0] ^= 1
    sealed.ciphertext = base64.urlsafe_b64encode(bytes(raw)).decode()
    with pytest.raises(CredentialKeyError):
        ring.open(sealed, "t")


def test_rotation_new_key_seals_old_key_still_opens() -> None:
    old, new = generate_key_spec("old"), generate_key_spec("new")
    sealed_before = Keyring.parse(old).seal(SECRET, "t")
    rotated = Keyring.parse(f"{new},{old}")
    assert rotated.open(sealed_before, "t") == SECRET
    assert rotated.seal(SECRET, "t").key_id == "new"
    with pytest.raises(CredentialKeyError, match="unknown key id"):
        Keyring.parse(new).open(sealed_before, "t")


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "empty"),
        ("k1", "expected"),
        ("k1:!!!", "base64|bytes"),
        ("k1:" + "A" * 8, "bytes"),
        ("bad id:AAAA", "expected"),
    ],
)
def test_bad_key_settings_are_refused_without_echoing_the_key(spec: str, problem: str) -> None:
    with pytest.raises(CredentialKeyError, match=problem) as info:
        Keyring.parse(spec)
    assert spec.partition(":")[2] == "" or spec.partition(":")[2] not in str(info.value)


def test_duplicate_key_ids_are_refused() -> None:
    spec = generate_key_spec("k")
    with pytest.raises(CredentialKeyError, match="twice"):
        Keyring.parse(f"{spec},{spec}")


def test_credential_repr_and_errors_never_show_secrets() -> None:
    cred = TargetCredential(username="root", password="s3cr3t-planted", escalation_password="esc-pw")
    assert "s3cr3t" not in repr(cred) and "esc-pw" not in str(cred)
    assert load(dump(cred)) == cred
    with pytest.raises(CredentialError) as info:
        parse({"username": "root", "password": 12345})
    assert "12345" not in str(info.value)


@pytest.mark.parametrize(
    ("fields", "scan_type", "problem"),
    [
        ({"username": "root"}, "authenticated", "exactly one"),
        ({"username": "root", "password": "p", "private_key": "k"}, "authenticated", "exactly one"),
        ({"username": "root", "password": "p"}, "authenticated_privileged", "escalation"),
        ({"username": "root", "password": "p", "escalation": "sudo"}, "authenticated", "only used"),
        ({"username": " ", "password": "p"}, "authenticated", "username"),
    ],
)
def test_credentials_are_checked_against_the_scan_type(fields: dict[str, str], scan_type: str, problem: str) -> None:
    with pytest.raises(CredentialError, match=problem):
        parse(fields).check(scan_type)  # type: ignore[arg-type]
    with pytest.raises(CredentialError):
        parse({**fields, "escalation": "runas"})
