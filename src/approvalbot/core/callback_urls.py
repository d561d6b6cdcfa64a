"""Where a callback may go: pure checks on hosts and addresses, shared by intake and the sender.

A callback carries the live grant, so a URL that points into the server's own network
(loopback, private ranges, a cloud metadata service) would turn approvalbot into a proxy
for an agent's SSRF. Two checks use these rules:

- at intake, `url_problem` refuses a URL whose host is a forbidden *literal* (an IP in any
  spelling, `localhost`, a metadata host name) or that is not https: no DNS, so it is
  cheap and deterministic;
- when sending, the job resolves the host and refuses when ANY resolved address is
  forbidden (`address_problem`), then connects to the very address it checked.

IPv4 literals are read the way `inet_aton` reads them (the C library, curl and browsers do),
because that is how a sender would connect: `2130706433`, `0x7f000001`, `0177.0.0.1` and
`127.1` are all 127.0.0.1. IPv6 addresses that embed an IPv4 one (mapped, compatible, 6to4,
Teredo, NAT64) are judged by the embedded address too.

`APPROVALBOT_CALLBACK_ALLOW` (an `AllowList`) names hosts, `*.suffix` patterns and CIDRs that
operators trust: for them plain http and otherwise forbidden addresses are allowed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Well-known metadata services; link-local and unique-local ones are forbidden anyway, the
# public Azure wire server and the Alibaba one (shared address space) are listed by name.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
        "192.0.0.192",  # Oracle Cloud (classic)
    )
)
METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data"})
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """An IPv4 literal as `inet_aton` reads it (1 to 4 parts; decimal, 0x-hex or 0-octal), else None."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        try:
            if part[:2].lower() == "0x":
                value = int(part[2:] or "0", 16)
            elif len(part) > 1 and part.startswith("0"):
                value = int(part[1:], 8)
            else:
                value = int(part, 10) if part.isascii() and part.isdigit() else -1
        except ValueError:
            return None
        if value < 0:
            return None
        values.append(value)
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def parse_literal(host: str) -> IPAddress | None:
    """The address a host string spells, if it is an IP literal (IPv6 with or without brackets)."""
    host = host.strip().rstrip(".") if not host.startswith("[") else host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])  # a zone id changes nothing about the address
        except ValueError:
            return None
    return parse_ipv4(host)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    packed = int(address)
    if packed >> 32 == 0 and packed > 1:  # IPv4-compatible ::a.b.c.d (deprecated, still routable by some stacks)
        return ipaddress.IPv4Address(packed)
    return None


def address_problem(address: IPAddress) -> str | None:
    """Why a callback must not connect to this address (a reason code), or None if it may."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_problem(embedded)
    if address in METADATA_ADDRESSES:
        return "metadata_address"
    checks = (
        ("unspecified_address", address.is_unspecified),
        ("loopback_address", address.is_loopback),
        ("link_local_address", address.is_link_local),
        ("multicast_address", address.is_multicast),
        ("reserved_address", address.is_reserved),
        ("private_address", address.is_private),
        ("site_local_address", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
    )
    for code, hit in checks:
        if hit:
            return code
    if not address.is_global:  # shared address space (100.64/10), benchmarking, documentation ranges …
        return "reserved_address"
    return None


def name_problem(host: str) -> str | None:
    """A host NAME that is forbidden without resolving it (`localhost` is loopback by definition, RFC 6761)."""
    name = host.strip().rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return "loopback_address"
    if name in METADATA_NAMES:
        return "metadata_address"
    return None


@dataclass(frozen=True)
class AllowList:
    """Hosts, `*.suffix` patterns and networks whose callbacks may use http and any address."""

    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> AllowList:
        """`host, *.example.com, 10.0.0.0/8, 127.0.0.1, ::1`; raises ValueError naming a bad entry."""
        hosts: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for raw in (text or "").split(","):
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            if entry.startswith("*."):
                if len(entry) < 3 or "*" in entry[2:]:
                    raise ValueError(f"APPROVALBOT_CALLBACK_ALLOW: bad pattern {raw.strip()!r}")
                suffixes.append(entry[1:])  # ".example.com"
            elif "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"APPROVALBOT_CALLBACK_ALLOW: bad network {raw.strip()!r}") from None
            elif (literal := parse_literal(entry)) is not None:
                networks.append(ipaddress.ip_network(literal))
            elif "*" in entry or "/" in entry or " " in entry:
                raise ValueError(f"APPROVALBOT_CALLBACK_ALLOW: bad entry {raw.strip()!r}")
            else:
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(suffixes), tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.hosts or self.suffixes or self.networks)

    def allows_address(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)

    def allows_host(self, host: str) -> bool:
        """The host as written in the URL: a name matched exactly or by suffix, or a literal in a network."""
        literal = parse_literal(host)
        if literal is not None:
            return self.allows_address(literal)
        name = host.strip().rstrip(".").lower()
        return name in self.hosts or any(name.endswith(suffix) for suffix in self.suffixes)


NO_ALLOW = AllowList()


def url_problem(scheme: str, host: str, allow: AllowList = NO_ALLOW) -> str | None:
    """The intake check (no DNS): why a callback URL with this scheme and host is refused, or None.

    Codes: `https_required`, or the address code of a forbidden literal or name.
    """
    if allow.allows_host(host):
        return None
    if scheme.lower() != "https":
        return "https_required"
    literal = parse_literal(host)
    if literal is not None:
        return address_problem(literal)
    return name_problem(host)


PROBLEM_WORDS = {
    "https_required": "callback URLs must use https (or name a host listed in APPROVALBOT_CALLBACK_ALLOW)",
    "metadata_address": "the callback host is a cloud metadata service",
    "loopback_address": "the callback host is a loopback address",
    "link_local_address": "the callback host is a link-local address",
    "multicast_address": "the callback host is a multicast address",
    "private_address": "the callback host is a private or unique-local address",
    "reserved_address": "the callback host is a reserved or non-global address",
    "site_local_address": "the callback host is a site-local address",
    "unspecified_address": "the callback host is the unspecified address",
}


def describe(problem: str) -> str:
    return PROBLEM_WORDS.get(problem, "the callback destination is not allowed")
