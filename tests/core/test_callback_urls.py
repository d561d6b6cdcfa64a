"""The pure destination rules: every spelling of a forbidden address is recognised, the allow list matches."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from approvalbot.core.callback_urls import AllowList, address_problem, parse_ipv4, parse_literal, url_problem

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "2130706433",  # decimal
    "0x7f000001",  # hex
    "0X7F000001",
    "0177.0.0.1",  # octal
    "017700000001",
    "127.1",  # short forms
    "127.0.1",
    "0x7f.1",
    "127.0.0.1.",  # trailing dot
    "[::1]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",  # IPv4-compatible
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "[64:ff9b::127.0.0.1]",  # NAT64
]


@pytest.mark.parametrize("spelling", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1", "10.1", "1.2.3.4"])
def test_ipv4_literals_are_read_as_inet_aton_reads_them(spelling: str) -> None:
    assert parse_ipv4(spelling) == ipaddress.IPv4Address(socket.inet_aton(spelling))


@pytest.mark.parametrize("text", ["example.com", "1.2.3.4.5", "256.1.1.1", "08.1.1.1", "", "1..2", "0x1g"])
def test_names_and_malformed_numbers_are_not_ipv4(text: str) -> None:
    assert parse_ipv4(text) is None


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_refused_at_intake(spelling: str) -> None:
    assert url_problem("https", spelling) == "loopback_address"


@pytest.mark.parametrize(
    ("host", "code"),
    [
        ("169.254.169.254", "metadata_address"),
        ("2852039166", "metadata_address"),  # 169.254.169.254 in decimal
        ("0xa9fea9fe", "metadata_address"),
        ("[::ffff:169.254.169.254]", "metadata_address"),
        ("[fd00:ec2::254]", "metadata_address"),
        ("100.100.100.200", "metadata_address"),
        ("168.63.129.16", "metadata_address"),
        ("metadata.google.internal", "metadata_address"),
        ("localhost", "loopback_address"),
        ("LOCALHOST.", "loopback_address"),
        ("api.localhost", "loopback_address"),
        ("10.0.0.1", "private_address"),
        ("172.16.5.4", "private_address"),
        ("192.168.1.1", "private_address"),
        ("[fc00::1]", "private_address"),
        ("[fe80::1]", "link_local_address"),
        ("169.254.1.1", "link_local_address"),
        ("224.0.0.1", "multicast_address"),
        ("[ff02::1]", "multicast_address"),
        ("0.0.0.0", "unspecified_address"),
        ("0", "unspecified_address"),
        ("[::]", "unspecified_address"),
        ("240.0.0.1", "reserved_address"),
        ("100.64.0.1", "reserved_address"),  # shared address space (carrier NAT)
        ("[2001:db8::1]", "private_address"),  # documentation
    ],
)
def test_forbidden_destinations_name_their_reason(host: str, code: str) -> None:
    assert url_problem("https", host) == code


@pytest.mark.parametrize("host", ["example.com", "93.184.216.34", "[2606:4700:4700::1111]", "hooks.agent.example"])
def test_public_https_destinations_pass(host: str) -> None:
    assert url_problem("https", host) is None


def test_plain_http_needs_the_allow_list() -> None:
    assert url_problem("http", "example.com") == "https_required"
    allow = AllowList.parse("example.com, *.internal.example, 127.0.0.1, 10.0.0.0/8, ::1")
    assert url_problem("http", "example.com", allow) is None
    assert url_problem("http", "hooks.internal.example", allow) is None
    assert url_problem("http", "internal.example", allow) == "https_required"  # `*.x` matches below x only
    assert url_problem("http", "2130706433", allow) is None  # the literal is 127.0.0.1, which is listed
    assert url_problem("http", "10.9.8.7", allow) is None
    assert url_problem("http", "[::1]", allow) is None
    assert url_problem("https", "192.168.0.1", allow) == "private_address"


@pytest.mark.parametrize("entry", ["*.", "a*b.example", "10.0.0.0/33", "ex ample.com"])
def test_a_bad_allow_list_entry_is_an_error(entry: str) -> None:
    with pytest.raises(ValueError, match="APPROVALBOT_CALLBACK_ALLOW"):
        AllowList.parse(entry)


def test_resolved_addresses_are_judged_like_literals() -> None:
    for literal in ("::ffff:10.0.0.1", "10.0.0.1"):
        address = parse_literal(literal)
        assert address is not None and address_problem(address) == "private_address"
    public = parse_literal("8.8.8.8")
    assert public is not None and address_problem(public) is None
