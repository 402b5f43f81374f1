"""Unit tests for ``scanfleet.common.config``: scanners.yaml loading, substitution, Settings."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from scanfleet.common.config import ConfigError, FleetConfig, Settings, load_fleet
from scanfleet.common.contract import Topology

VALID = """\
version: 1
default_pool: nessus
pools:
  nessus:
    description: internal scanners
    scanners:
      - id: scanner-1
        url: https://nessus-1.example.com:8834
        auth:
          access_key: AK1
          secret_key: SK1
        max_concurrent_scans: 4
        enabled: false
        tls_verify: true
        ca_bundle: /etc/ssl/ca.pem
        labels:
          site: hq
          zone: core
      - id: scanner_2
        url: http://10.0.0.2:8834
        auth:
          username: admin
          password: hunter2
  dmz:
    scanners:
      - id: dmz-1
        url: https://dmz.example.com
        auth:
          username: u
          password: p
        tls_verify: false
"""


def write(tmp_path: Path, text: str, name: str = "scanners.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


_DROP = object()


def scanner(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "s1",
        "url": "https://nessus.example.com:8834",
        "auth": {"access_key": "ak", "secret_key": "sk"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


def fleet_file(tmp_path: Path, *scanners: dict[str, Any], pool: str = "nessus", **top: Any) -> Path:
    data: dict[str, Any] = {"version": 1, "pools": {pool: {"scanners": list(scanners)}}}
    data.update(top)
    path = tmp_path / "scanners.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_error(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_fleet(path, env=env if env is not None else {})
    return str(info.value)


# Valid files ------------------------------------------------------------------------------


def test_valid_file_round_trip(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, VALID), env={})
    assert isinstance(fleet, FleetConfig)
    assert fleet.version == 1
    assert fleet.default_pool == "nessus"
    assert list(fleet.pools) == ["nessus", "dmz"]
    assert fleet.pool_names == ["dmz", "nessus"]
    nessus = fleet.pools["nessus"]
    assert nessus.description == "internal scanners"
    first, second = nessus.scanners
    assert first.id == "scanner-1"
    assert first.url == "https://nessus-1.example.com:8834"
    assert first.auth.access_key == "AK1"
    assert first.auth.secret_key == "SK1"
    assert first.auth.username is None
    assert first.auth.password is None
    assert first.max_concurrent_scans == 4
    assert first.enabled is False
    assert first.tls_verify is True
    assert first.ca_bundle == "/etc/ssl/ca.pem"
    assert first.labels == {"site": "hq", "zone": "core"}
    assert second.id == "scanner_2"
    assert second.auth.username == "admin"
    assert second.auth.password == "hunter2"
    assert second.auth.access_key is None
    dmz = fleet.pools["dmz"].scanners[0]
    assert dmz.tls_verify is False
    assert fleet.find("dmz", "dmz-1") is dmz
    assert [(pool, s.id) for pool, s in fleet.instances()] == [
        ("nessus", "scanner-1"),
        ("nessus", "scanner_2"),
        ("dmz", "dmz-1"),
    ]


def test_load_accepts_str_path(tmp_path: Path) -> None:
    fleet = load_fleet(str(write(tmp_path, VALID)), env={})
    assert fleet.pools["dmz"].scanners[0].id == "dmz-1"


def test_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        pools:
          p:
            scanners:
              - id: a
                url: https://a.example.com
                auth: {username: u, password: p}
        """,
    )
    fleet = load_fleet(path, env={})
    assert fleet.version == 1
    assert fleet.default_pool is None
    assert fleet.pools["p"].description == ""
    s = fleet.pools["p"].scanners[0]
    assert s.max_concurrent_scans == 2
    assert s.enabled is True
    assert s.tls_verify is True
    assert s.ca_bundle is None
    assert s.labels == {}


def test_names_at_the_64_char_limit_are_accepted(tmp_path: Path) -> None:
    pool = "P" * 64
    sid = "a-Z_9" + "x" * 59
    fleet = load_fleet(fleet_file(tmp_path, scanner(id=sid), pool=pool), env={})
    assert fleet.pools[pool].scanners[0].id == sid


def test_same_id_in_different_pools_is_fine(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        pools:
          a:
            scanners:
              - {id: s, url: "https://a", auth: {username: u, password: p}}
          b:
            scanners:
              - {id: s, url: "https://b", auth: {username: u, password: p}}
        """,
    )
    fleet = load_fleet(path, env={})
    assert fleet.find("a", "s").url == "https://a"
    assert fleet.find("b", "s").url == "https://b"


def test_find_unknown_instance_raises_key_error(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, VALID), env={})
    with pytest.raises(KeyError):
        fleet.find("nessus", "nope")


def test_topology(tmp_path: Path) -> None:
    topology = load_fleet(write(tmp_path, VALID), env={}).topology()
    assert isinstance(topology, Topology)
    assert topology.pools == {"nessus": ["scanner-1", "scanner_2"], "dmz": ["dmz-1"]}


# Substitution -----------------------------------------------------------------------------

SUBST = """\
pools:
  nessus:
    description: "${DESC:-none}"
    scanners:
      - id: "${ID}"
        url: "https://${HOST}:${PORT:-8834}/"
        auth:
          access_key: "${AK}"
          secret_key: "prefix-${SK:-fallback}-suffix"
        max_concurrent_scans: "${MAX:-3}"
        enabled: "${ENABLED:-true}"
        labels:
          site: "${SITE:-hq}"
"""

BASE_ENV = {"ID": "s-1", "HOST": "nessus.local", "AK": "key"}


def test_substitution_with_values_set(tmp_path: Path) -> None:
    env = {
        **BASE_ENV,
        "PORT": "9000",
        "SK": "secret",
        "MAX": "7",
        "ENABLED": "false",
        "DESC": "d",
        "SITE": "dc2",
    }
    fleet = load_fleet(write(tmp_path, SUBST), env=env)
    s = fleet.pools["nessus"].scanners[0]
    assert s.id == "s-1"
    assert s.url == "https://nessus.local:9000/"
    assert s.auth.access_key == "key"
    assert s.auth.secret_key == "prefix-secret-suffix"
    assert s.max_concurrent_scans == 7
    assert type(s.max_concurrent_scans) is int
    assert s.enabled is False
    assert s.labels == {"site": "dc2"}
    assert fleet.pools["nessus"].description == "d"


def test_substitution_defaults_when_unset(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, SUBST), env=dict(BASE_ENV))
    s = fleet.pools["nessus"].scanners[0]
    assert s.url == "https://nessus.local:8834/"
    assert s.auth.secret_key == "prefix-fallback-suffix"
    assert s.max_concurrent_scans == 3
    assert type(s.max_concurrent_scans) is int
    assert s.enabled is True
    assert s.labels == {"site": "hq"}
    assert fleet.pools["nessus"].description == "none"


def test_substitution_empty_value_counts_as_unset(tmp_path: Path) -> None:
    env = {**BASE_ENV, "PORT": "", "MAX": "", "SITE": ""}
    s = load_fleet(write(tmp_path, SUBST), env=env).pools["nessus"].scanners[0]
    assert s.url == "https://nessus.local:8834/"
    assert s.max_concurrent_scans == 3
    assert s.labels == {"site": "hq"}


def test_substitution_empty_value_without_default_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, SUBST)
    message = load_error(path, env={**BASE_ENV, "HOST": ""})
    assert str(path) in message
    assert "HOST" in message
    assert "pools.nessus.scanners[0].url" in message


def test_substitution_in_a_nested_list(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        pools:
          nessus:
            scanners:
              - id: a
                url: "https://${A_HOST}"
                auth: {username: "${USER:-admin}", password: "${PASS}"}
              - id: b
                url: "https://${B_HOST:-b.example.com}:${B_PORT}"
                auth: {username: u, password: p}
        """,
    )
    fleet = load_fleet(path, env={"A_HOST": "a.example.com", "PASS": "pw", "B_PORT": "1"})
    a, b = fleet.pools["nessus"].scanners
    assert a.url == "https://a.example.com"
    assert a.auth.username == "admin"
    assert a.auth.password == "pw"
    assert b.url == "https://b.example.com:1"


def test_substitution_missing_without_default_names_key_and_variable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        pools:
          nessus:
            scanners:
              - id: a
                url: https://a
                auth: {username: u, password: p}
              - id: b
                url: https://b
                auth: {access_key: "${NESSUS_B_KEY}", secret_key: s}
        """,
    )
    message = load_error(path, env={"OTHER": "x"})
    assert str(path) in message
    assert "pools.nessus.scanners[1].auth.access_key" in message
    assert "NESSUS_B_KEY" in message


def test_substitution_does_not_read_os_environ_when_env_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "from-os-environ")
    path = write(tmp_path, SUBST)
    message = load_error(path, env={"ID": "s", "AK": "k"})
    assert "HOST" in message


def test_substituted_int_that_is_not_a_number_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, SUBST)
    message = load_error(path, env={**BASE_ENV, "MAX": "lots"})
    assert str(path) in message
    assert "max_concurrent_scans" in message


# Error paths ------------------------------------------------------------------------------


def test_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "scanners.yaml"
    message = load_error(path)
    assert str(path) in message
    assert "not found" in message


def test_unreadable_path_is_a_config_error(tmp_path: Path) -> None:
    directory = tmp_path / "dir.yaml"
    directory.mkdir()
    message = load_error(directory)
    assert str(directory) in message


def test_invalid_yaml_reports_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        pools:
          nessus: [unclosed
        """,
    )
    message = load_error(path)
    assert str(path) in message
    assert "invalid YAML" in message
    assert "line " in message
    assert "column " in message


def test_invalid_yaml_line_number_is_one_based(tmp_path: Path) -> None:
    # A tab at the start of line 3 is a scanner error located exactly there.
    path = tmp_path / "scanners.yaml"
    path.write_text("version: 1\npools:\n\tnessus: {}\n", encoding="utf-8")
    message = load_error(path)
    assert "line 3, column 1" in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    message = load_error(path)
    assert str(path) in message
    assert "empty" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    message = load_error(path)
    assert str(path) in message
    assert "mapping" in message


def test_no_pools_key(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\n")
    message = load_error(path)
    assert str(path) in message
    assert "pools" in message


def test_empty_pools(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\npools: {}\n")
    message = load_error(path)
    assert str(path) in message
    assert "pools: no pools" in message


@pytest.mark.parametrize("pool", ["bad pool", "bad.pool", "p/q", "x" * 65, "pool!"])
def test_bad_pool_name(tmp_path: Path, pool: str) -> None:
    path = fleet_file(tmp_path, scanner(), pool=pool)
    message = load_error(path)
    assert str(path) in message
    assert f"pools.{pool}:" in message
    assert "pool names" in message


def test_pool_name_with_trailing_newline_is_rejected(tmp_path: Path) -> None:
    # Only letters, digits, '_' and '-' are allowed; a newline is none of those.
    path = fleet_file(tmp_path, scanner(), pool="nessus\n")
    message = load_error(path)
    assert "pool names" in message


def test_empty_scanner_list(tmp_path: Path) -> None:
    path = fleet_file(tmp_path)
    message = load_error(path)
    assert str(path) in message
    assert "pools.nessus.scanners:" in message
    assert "at least one scanner" in message


@pytest.mark.parametrize("bad_id", ["", "has space", "dot.ted", "semi;colon", "é", "y" * 65])
def test_bad_scanner_id(tmp_path: Path, bad_id: str) -> None:
    path = fleet_file(tmp_path, scanner(id="ok"), scanner(id=bad_id))
    message = load_error(path)
    assert str(path) in message
    assert "pools.nessus.scanners[1].id:" in message
    assert "scanner ids" in message


def test_scanner_id_with_trailing_newline_is_rejected(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, scanner(id="scanner-1\n"))
    message = load_error(path)
    assert "pools.nessus.scanners[0].id:" in message


def test_duplicate_scanner_id(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, scanner(id="a"), scanner(id="b"), scanner(id="a"))
    message = load_error(path)
    assert str(path) in message
    assert "pools.nessus.scanners[2].id:" in message
    assert "duplicate" in message
    assert "'a'" in message


@pytest.mark.parametrize("url", ["ftp://x", "nessus.example.com:8834", "HTTPS//x", "file:///etc/passwd", ""])
def test_non_http_url(tmp_path: Path, url: str) -> None:
    path = fleet_file(tmp_path, scanner(url=url))
    message = load_error(path)
    assert str(path) in message
    assert "pools.nessus.scanners[0].url:" in message
    assert "http" in message


@pytest.mark.parametrize("value", [0, -1])
def test_max_concurrent_scans_below_one(tmp_path: Path, value: int) -> None:
    path = fleet_file(tmp_path, scanner(id="a"), scanner(id="b", max_concurrent_scans=value))
    message = load_error(path)
    assert str(path) in message
    assert "pools.nessus.scanners[1].max_concurrent_scans:" in message
    assert "at least 1" in message


def test_wrong_type_list_where_string_belongs(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, scanner(id="a"), scanner(id="b", url=["https://x"]))
    message = load_error(path)
    assert str(path) in message
    assert "str" in message
    # The key path must name the pool, like every other message.
    assert "pools.nessus.scanners[1].url" in message


def test_wrong_type_string_where_int_belongs(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, scanner(id="a"), scanner(id="b", max_concurrent_scans="many"))
    message = load_error(path)
    assert str(path) in message
    assert "int" in message
    assert "pools.nessus.scanners[1].max_concurrent_scans" in message


def test_wrong_type_pools_is_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, "pools:\n  - nessus\n")
    message = load_error(path)
    assert str(path) in message
    assert "pools" in message


def test_unknown_key_typo(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, scanner(id="a"), scanner(id="b", max_concurent_scans=3))
    message = load_error(path)
    assert str(path) in message
    assert "max_concurent_scans" in message
    assert "pools.nessus.scanners[1]" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, scanner(), defualt_pool="nessus")
    message = load_error(path)
    assert str(path) in message
    assert "defualt_pool" in message


def test_unknown_auth_key(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, scanner(auth={"username": "u", "password": "p", "token": "t"}))
    message = load_error(path)
    assert "token" in message
    assert "pools.nessus.scanners[0].auth" in message


def test_both_auth_pairs(tmp_path: Path) -> None:
    auth = {"access_key": "a", "secret_key": "s", "username": "u", "password": "p"}
    path = fleet_file(tmp_path, scanner(auth=auth))
    message = load_error(path)
    assert str(path) in message
    assert "pools.nessus.scanners[0].auth:" in message
    assert "either" in message


def test_one_half_of_each_pair(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, scanner(auth={"access_key": "a", "username": "u"}))
    message = load_error(path)
    assert "pools.nessus.scanners[0].auth:" in message


def test_no_auth_pair(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, scanner(auth={}))
    message = load_error(path)
    assert str(path) in message
    assert "pools.nessus.scanners[0].auth:" in message
    assert "either" in message


def test_auth_missing_entirely(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, scanner(auth=_DROP))
    message = load_error(path)
    assert str(path) in message
    assert "auth" in message


@pytest.mark.parametrize(
    ("auth", "words"),
    [
        ({"access_key": "a"}, ("access_key", "secret_key")),
        ({"secret_key": "s"}, ("access_key", "secret_key")),
        ({"access_key": "", "secret_key": "s"}, ("access_key", "secret_key")),
        ({"username": "u"}, ("username", "password")),
        ({"password": "p"}, ("username", "password")),
        ({"username": "u", "password": ""}, ("username", "password")),
    ],
)
def test_half_a_pair(tmp_path: Path, auth: dict[str, str], words: tuple[str, str]) -> None:
    path = fleet_file(tmp_path, scanner(id="a"), scanner(id="b", auth=auth))
    message = load_error(path)
    assert str(path) in message
    assert "pools.nessus.scanners[1].auth:" in message
    for word in words:
        assert word in message


def test_ca_bundle_with_tls_verify_false(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, scanner(tls_verify=False, ca_bundle="/ca.pem"))
    message = load_error(path)
    assert str(path) in message
    assert "pools.nessus.scanners[0].ca_bundle:" in message
    assert "tls_verify" in message


def test_ca_bundle_with_tls_verify_true_is_fine(tmp_path: Path) -> None:
    fleet = load_fleet(fleet_file(tmp_path, scanner(ca_bundle="/ca.pem")), env={})
    assert fleet.pools["nessus"].scanners[0].ca_bundle == "/ca.pem"


def test_default_pool_not_among_pools(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, scanner(), default_pool="elsewhere")
    message = load_error(path)
    assert str(path) in message
    assert "default_pool:" in message
    assert "elsewhere" in message
    assert "nessus" in message


@pytest.mark.parametrize("version", [0, 2, 99])
def test_unsupported_version(tmp_path: Path, version: int) -> None:
    path = fleet_file(tmp_path, scanner(), version=version)
    message = load_error(path)
    assert str(path) in message
    assert "version:" in message
    assert str(version) in message


# Settings ---------------------------------------------------------------------------------


def test_settings_defaults_from_empty_env() -> None:
    s = Settings.from_env({})
    assert s.nats_url == "nats://127.0.0.1:4222"
    assert s.scanners_file is None
    assert s.gateway_host == "127.0.0.1"
    assert s.gateway_port == 8080
    assert s.log_level == "INFO"
    assert s.service_host == "127.0.0.1"
    assert s.service_port is None
    assert s.poll_interval == 10.0
    assert s.export_timeout == 600.0
    assert s.agent_instances is None


def test_settings_fields_map_to_scanfleet_env_vars() -> None:
    env = {
        "SCANFLEET_NATS_URL": "nats://nats:4222",
        "SCANFLEET_SCANNERS_FILE": "/etc/scanfleet/scanners.yaml",
        "SCANFLEET_GATEWAY_HOST": "0.0.0.0",
        "SCANFLEET_GATEWAY_PORT": "9090",
        "SCANFLEET_LOG_LEVEL": "DEBUG",
        "SCANFLEET_SERVICE_HOST": "10.1.1.1",
        "SCANFLEET_SERVICE_PORT": "7000",
        "SCANFLEET_POLL_INTERVAL": "2.5",
        "SCANFLEET_EXPORT_TIMEOUT": "30",
        "SCANFLEET_AGENT_INSTANCES": "nessus.a,nessus.b",
        "NATS_URL": "ignored",
        "GATEWAY_PORT": "1",
    }
    s = Settings.from_env(env)
    assert s.nats_url == "nats://nats:4222"
    assert s.scanners_file == "/etc/scanfleet/scanners.yaml"
    assert s.gateway_host == "0.0.0.0"
    assert s.gateway_port == 9090
    assert type(s.gateway_port) is int
    assert s.log_level == "DEBUG"
    assert s.service_host == "10.1.1.1"
    assert s.service_port == 7000
    assert s.poll_interval == 2.5
    assert s.export_timeout == 30.0
    assert s.agent_instances == "nessus.a,nessus.b"
    assert s.require_scanners_file() == Path("/etc/scanfleet/scanners.yaml")


def test_settings_empty_env_value_counts_as_unset() -> None:
    s = Settings.from_env({"SCANFLEET_GATEWAY_PORT": "", "SCANFLEET_LOG_LEVEL": ""})
    assert s.gateway_port == 8080
    assert s.log_level == "INFO"


def test_settings_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCANFLEET_LOG_LEVEL", "WARNING")
    assert Settings.from_env().log_level == "WARNING"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SCANFLEET_GATEWAY_PORT", "abc"),
        ("SCANFLEET_SERVICE_PORT", "12x"),
        ("SCANFLEET_POLL_INTERVAL", "soon"),
    ],
)
def test_settings_bad_number_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({var: value})
    assert var in str(info.value)


def test_require_scanners_file_when_unset() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({}).require_scanners_file()
    assert "SCANFLEET_SCANNERS_FILE" in str(info.value)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
