"""Which network destinations the server may call: one policy for every URL a caller
or an operator names (job callbacks, image URLs), and the rule of ``offline: true``
(:func:`offline_refusal`) for every URL at all.

* With no allow-list: anywhere except loopback, "this host" (``0.0.0.0/8``, ``::``),
  link-local (``169.254.0.0/16``, ``fe80::/10``), multicast, reserved and cloud-metadata
  addresses and names; IPv4 written inside IPv6 (mapped, 6to4, NAT64, Teredo) counts as
  the IPv4 address it holds.
* With an allow-list: only the listed hosts. An IP or CIDR entry allows every address it
  covers (loopback included); a name entry (``hooks.example.com``, or ``*.example.com``
  for its subdomains) allows that name when every address it resolves to is allowed by a
  CIDR entry or is not one of the addresses refused by default.

* Offline (``offline: true``, for closed networks): every URL — configured (providers,
  embedding server, catalog, Redis, Milvus, SQL sources, the legacy push URL) or requested
  (image URLs, job callbacks) — must name a loopback host or one of ``offline_allow``;
  names are matched as written, never resolved (a lookup is already traffic).

Pure functions of a host, its resolved addresses and the configured entries: resolving
is the caller's business (so that it can pin the connection to what was checked).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import ssl
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every outgoing client: a new httpx client otherwise loads the CA
    bundle again (20-90 ms on a busy 2-core machine, on the event loop's thread), even for
    plain-HTTP model servers. Honours SSL_CERT_FILE / SSL_CERT_DIR."""
    return httpx.create_ssl_context()


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Addresses a callback never reaches unless an IP or CIDR entry of jobs.callback_allow covers them.
_REFUSED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this host" (0.0.0.0 reaches the local machine)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, including 169.254.169.254 (AWS, GCP, Azure, OCI metadata)
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "192.0.0.192/32",  # Oracle Cloud (classic) metadata
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "::/96",  # unspecified, loopback (::1) and the deprecated IPv4-compatible addresses
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
        "fd00:ec2::254/128",  # AWS metadata over IPv6
    )
)
# Names refused before they are resolved (the resolver of a cloud VM answers them).
REFUSED_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "ip6-localhost",
        "ip6-loopback",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.azure.internal",
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

_NAME = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def canonical(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address is the IPv4 address (the kernel connects there)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found: list[ipaddress.IPv4Address] = []
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.append(ip.teredo[1])
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_refused_by_default(ip: IPAddress) -> bool:
    """Loopback, link-local, metadata and the like (also when written inside IPv6)."""
    ip = canonical(ip)
    if any(ip in net for net in _REFUSED_NETWORKS if net.version == ip.version):
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        return any(is_refused_by_default(inner) for inner in _embedded_ipv4(ip))
    return False


def normalize_host_entries(entries: Iterable[str]) -> list[str]:
    """Validate ``jobs.callback_allow`` / ``jobs.callback_header_hosts`` entries: IPs and
    CIDRs in their compressed form, names lower-case ASCII (IDNA) without a final dot."""
    normalized: list[str] = []
    for raw in entries:
        entry = raw.strip()
        bare = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
        try:
            normalized.append(ipaddress.ip_network(bare, strict=False).compressed)
            continue
        except ValueError:
            if "/" in bare or ":" in bare:
                raise ValueError(f"{raw!r}: not a host name, IP address or CIDR (no ports)") from None
        wildcard = bare.startswith("*.")
        name = bare[2:] if wildcard else bare
        try:
            ascii_name = httpx.URL(f"http://{name}/").raw_host.decode("ascii").rstrip(".").lower()
        except (httpx.InvalidURL, UnicodeError):
            ascii_name = ""
        pattern = f"*.{ascii_name}" if wildcard else ascii_name
        if not ascii_name or not _NAME.fullmatch(pattern):
            raise ValueError(f"{raw!r}: not a host name, IP address or CIDR")
        normalized.append(pattern)
    return normalized


@functools.lru_cache(maxsize=32)
def _rules(entries: tuple[str, ...]) -> tuple[tuple[IPNetwork, ...], tuple[str, ...]]:
    networks: list[IPNetwork] = []
    names: list[str] = []
    for entry in normalize_host_entries(entries):
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError:
            names.append(entry)
    return tuple(networks), tuple(names)


def _name_matches(host: str, names: Iterable[str]) -> bool:
    for name in names:
        if name.startswith("*."):
            if host.endswith(name[1:]) and host != name[2:]:
                return True
        elif host == name:
            return True
    return False


def _covered(ip: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    ip = canonical(ip)
    return any(ip in net for net in networks if net.version == ip.version)


def destination_allowed(host: str, addresses: list[IPAddress], entries: list[str]) -> bool:
    if not entries:
        return (
            host not in REFUSED_NAMES
            and not host.endswith(".localhost")
            and not any(is_refused_by_default(ip) for ip in addresses)
        )
    networks, names = _rules(tuple(entries))
    named = _name_matches(host, names)
    return all(_covered(ip, networks) or (named and not is_refused_by_default(ip)) for ip in addresses)


def credentials_go_to(host: str, addresses: list[IPAddress], entries: list[str]) -> bool:
    if not entries:
        return False
    networks, names = _rules(tuple(entries))
    return _name_matches(host, names) or all(_covered(ip, networks) for ip in addresses)


# Host names that always mean this machine (no lookup needed to know it).
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def _hosts_of(target: str) -> list[str]:
    """The hosts a URL (or a bare ``host[:port]``) names, lower-case, without brackets or a
    final dot; none for a URL without one (a file path, ``sqlite:///...``, ``unix://``)."""
    text = target.strip()
    if "://" not in text:
        text = f"//{text}"
    netloc = urlsplit(text).netloc.rpartition("@")[2]
    hosts: list[str] = []
    for part in netloc.split(","):  # PostgreSQL URLs may list several hosts
        part = part.strip()
        if part.startswith("["):
            host = part[1:].partition("]")[0]
        else:
            host = part.rpartition(":")[0] if part.count(":") == 1 else part
        host = host.strip().rstrip(".").lower()
        if host:
            hosts.append(host)
    return hosts


def offline_refusal(target: str, allow: Sequence[str]) -> str | None:
    """The offline rule: None when every host of ``target`` (a URL or a bare host) is
    loopback (``127.0.0.0/8``, ``::1``, ``localhost``) or covered by ``allow`` (entries as
    :func:`normalize_host_entries` takes them: names, ``*.names``, IPs, CIDRs); otherwise
    why not, naming the host. A URL with no host (a local file) is allowed. Names are
    matched as written and never resolved, so nothing here touches the network."""
    networks, names = _rules(tuple(allow))
    for host in _hosts_of(target):
        try:
            ip = canonical(ipaddress.ip_address(host.split("%", 1)[0]))
        except ValueError:
            if host in _LOOPBACK_NAMES or host.endswith(".localhost") or _name_matches(host, names):
                continue
        else:
            if ip.is_loopback or _covered(ip, networks):
                continue
        return f"{host} is neither loopback nor listed in offline_allow (offline mode)"
    return None
