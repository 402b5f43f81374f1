"""Unit tests for ``scanfleet.common.targets``: what scan targets the gateway accepts."""

from __future__ import annotations

import pytest

from scanfleet.common.targets import MAX_ADDRESSES, InvalidTarget, Target, parse_target, parse_targets


def texts(targets: list[Target]) -> list[str]:
    return [t.text for t in targets]


# Accepted ---------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["10.0.0.1", "192.168.1.254", "0.0.0.0", "255.255.255.255"])
def test_ipv4_address(address: str) -> None:
    assert parse_targets(address) == [Target(address, 1, "address")]


@pytest.mark.parametrize("address", ["::1", "2001:db8::1", "fe80::1:2:3:4"])
def test_ipv6_address(address: str) -> None:
    assert parse_targets(address) == [Target(address, 1, "address")]


@pytest.mark.parametrize(
    ("cidr", "count"),
    [
        ("10.0.0.0/24", 256),
        ("192.168.0.0/16", 65_536),
        ("10.1.2.3/32", 1),
        ("10.0.0.0/30", 4),
        ("2001:db8::/120", 256),
        ("2001:db8::/128", 1),
    ],
)
def test_cidr(cidr: str, count: int) -> None:
    [target] = parse_targets(cidr)
    assert target.kind == "cidr"
    assert target.addresses == count
    assert target.text == cidr


def test_cidr_with_host_bits_is_normalized_to_the_network() -> None:
    [target] = parse_targets("10.0.0.7/24")
    assert target == Target("10.0.0.0/24", 256, "cidr")


def test_short_range_counts_its_addresses() -> None:
    [target] = parse_targets("10.0.0.1-20")
    assert target.kind == "range"
    assert target.addresses == 20


def test_short_range_of_one_address() -> None:
    [target] = parse_targets("10.0.0.5-5")
    assert target.kind == "range"
    assert target.addresses == 1


@pytest.mark.parametrize(
    ("entry", "count"),
    [
        ("10.0.0.1-10.0.0.20", 20),
        ("10.0.0.250-10.0.1.5", 12),
        ("192.168.1.1-192.168.1.1", 1),
        ("2001:db8::1-2001:db8::10", 16),
    ],
)
def test_full_range(entry: str, count: int) -> None:
    [target] = parse_targets(entry)
    assert target == Target(entry, count, "range")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("example.com", "example.com"),
        ("Scanner-01.Corp.Example.COM", "scanner-01.corp.example.com"),
        ("localhost", "localhost"),
        ("web-1", "web-1"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
)
def test_host_name_lowercased(entry: str, expected: str) -> None:
    assert parse_targets(entry) == [Target(expected, 1, "hostname")]


def test_comma_and_whitespace_separation() -> None:
    targets = parse_targets(" 10.0.0.1, 10.0.0.2\n10.0.0.0/30\thost.example ,,  ::1 ")
    assert texts(targets) == ["10.0.0.1", "10.0.0.2", "10.0.0.0/30", "host.example", "::1"]
    assert sum(t.addresses for t in targets) == 1 + 1 + 4 + 1 + 1


def test_list_input() -> None:
    targets = parse_targets(["10.0.0.1", "a.example, b.example", " 10.0.1.0/31 "])
    assert texts(targets) == ["10.0.0.1", "a.example", "b.example", "10.0.1.0/31"]
    assert [t.kind for t in targets] == ["address", "hostname", "hostname", "cidr"]


def test_list_input_ignores_empty_items_when_others_are_present() -> None:
    assert texts(parse_targets(["", "10.0.0.1", "  "])) == ["10.0.0.1"]


def test_duplicates_removed_keeping_order() -> None:
    targets = parse_targets("b.example 10.0.0.1 a.example 10.0.0.1 B.EXAMPLE a.example")
    assert texts(targets) == ["b.example", "10.0.0.1", "a.example"]


def test_duplicate_networks_written_differently_are_one_target() -> None:
    assert texts(parse_targets("10.0.0.0/24 10.0.0.9/24")) == ["10.0.0.0/24"]


def test_total_at_the_limit_is_accepted() -> None:
    targets = parse_targets("10.0.0.0/24 10.0.1.0/24", max_addresses=512)
    assert sum(t.addresses for t in targets) == 512


def test_default_limit_accepts_a_slash_16() -> None:
    assert MAX_ADDRESSES == 65_536
    assert parse_targets("10.0.0.0/16")[0].addresses == 65_536


def test_parse_target_single_entry_kinds() -> None:
    assert parse_target("10.0.0.1").kind == "address"
    assert parse_target("10.0.0.0/8").kind == "cidr"
    assert parse_target("10.0.0.1-10.0.0.2").kind == "range"
    assert parse_target("host.example").kind == "hostname"


# Rejected ---------------------------------------------------------------------------------


def rejected(text: str | list[str], **kwargs: int) -> str:
    with pytest.raises(InvalidTarget) as info:
        parse_targets(text, **kwargs)
    return str(info.value)


def test_invalid_target_is_a_value_error() -> None:
    assert issubclass(InvalidTarget, ValueError)


@pytest.mark.parametrize("text", ["", "   ", ",", " , ,\n\t, ", []])
def test_empty_or_only_separators(text: str | list[str]) -> None:
    assert "no targets" in rejected(text)


@pytest.mark.parametrize("url", ["http://x", "https://example.com/", "ftp://10.0.0.1"])
def test_url_rejected(url: str) -> None:
    assert url in rejected(url)


def test_url_among_good_entries_is_named() -> None:
    assert "http://x" in rejected("10.0.0.1, http://x, example.com")


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("10.0.0.1;rm -rf /", "10.0.0.1;rm"),
        ("$(id)", "$(id)"),
        ("`id`", "`id`"),
        ("host.example|nc", "host.example|nc"),
        ("a&&b", "a&&b"),
        ("x>y", "x>y"),
        ("${IFS}", "${IFS}"),
        ("'quoted'", "quoted"),
    ],
)
def test_shell_metacharacters_rejected(text: str, bad: str) -> None:
    assert bad in rejected(text)


def test_shell_metacharacters_never_pass_through_parse_target() -> None:
    for entry in ["10.0.0.1;rm", "-rf", "/", "$(id)", "`id`"]:
        with pytest.raises(InvalidTarget):
            parse_target(entry)


@pytest.mark.parametrize("entry", ["10.0.0.20-10.0.0.1", "2001:db8::9-2001:db8::1"])
def test_reversed_full_range(entry: str) -> None:
    assert entry in rejected(entry)


def test_reversed_short_range() -> None:
    assert "10.0.0.20-1" in rejected("10.0.0.20-1")


@pytest.mark.parametrize("entry", ["10.0.0.1-300", "10.0.0.1-999"])
def test_short_range_past_the_octet(entry: str) -> None:
    assert entry in rejected(entry)


@pytest.mark.parametrize("entry", ["10.0.0.1-::1", "::1-10.0.0.1"])
def test_range_across_ip_versions(entry: str) -> None:
    assert entry in rejected(entry)


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/", "300.0.0.0/8", "2001:db8::/129"])
def test_bad_cidr(entry: str) -> None:
    assert entry in rejected(entry)


def test_label_over_63_chars() -> None:
    entry = "a" * 64 + ".example.com"
    assert entry in rejected(entry)


def test_name_over_253_chars() -> None:
    entry = ".".join(["a" * 50] * 6)  # 305 characters, every label fine
    assert entry in rejected(entry)


@pytest.mark.parametrize("entry", ["my_host.example.com", "under_score"])
def test_name_with_underscore(entry: str) -> None:
    assert entry in rejected(entry)


@pytest.mark.parametrize("entry", ["-lead.example", "trail-.example", "a..b", "10.0.0.256", "1.2.3"])
def test_malformed_names_and_addresses(entry: str) -> None:
    assert entry in rejected(entry)


def test_over_default_max_addresses() -> None:
    message = rejected("10.0.0.0/8")
    assert str(2**24) in message
    assert str(MAX_ADDRESSES) in message


def test_over_custom_max_addresses() -> None:
    message = rejected("10.0.0.0/24 10.0.1.0/24 10.0.2.1", max_addresses=512)
    assert "513" in message
    assert "512" in message


def test_large_short_ranges_count_towards_the_limit() -> None:
    # Five ranges of 250 addresses each: 1250 > 1000.
    text = " ".join(f"10.0.{i}.1-250" for i in range(5))
    assert "1000" in rejected(text, max_addresses=1000)


def test_one_bad_entry_rejects_the_whole_input() -> None:
    assert "bad_name" in rejected(["10.0.0.1", "example.com bad_name"])
