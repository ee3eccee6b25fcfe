"""Callback delivery: POST the result, signed, with an idempotency key, retried with backoff.

Headers sent with every attempt:

* ``Idempotency-Key: <job id>`` — the same on every retry and every re-run of the
  job, so a receiver that stores it can drop duplicates (at-least-once delivery);
* ``X-Hanrag-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``;
* ``X-Hanrag-Job-Id``, the per-request headers, and the configured headers
  (``jobs.callback_headers``) only when the destination is one of ``jobs.callback_header_hosts``.

Where a callback may go (the caller names the URL, so the server must not become the
caller's way into places only the server can reach):

* ``jobs.callback_allow`` empty (the default): anywhere except loopback, "this host"
  (``0.0.0.0/8``, ``::``), link-local (``169.254.0.0/16``, ``fe80::/10``), multicast,
  reserved and cloud-metadata addresses and names; IPv4 written inside IPv6 (mapped,
  6to4, NAT64, Teredo) counts as the IPv4 address it holds.
* ``jobs.callback_allow`` set: only the listed hosts. An IP or CIDR entry allows every
  address it covers (loopback included); a name entry (``hooks.example.com``, or
  ``*.example.com`` for its subdomains) allows that name when every address it resolves
  to is allowed by a CIDR entry or is not one of the addresses refused by default.

The host is resolved when the job is submitted (a refused or unresolvable destination is
a 400 ``callback_not_allowed``) and again before every delivery attempt: each attempt
connects to an address that was just checked (the URL's host pinned to it, the name kept
for ``Host`` and TLS), so a name that changes its answer in between (DNS rebinding) is
refused then. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from hanrag.errors import InvalidInputError
from hanrag.netpolicy import (
    REFUSED_NAMES,
    IPAddress,
    canonical,
    credentials_go_to,
    destination_allowed,
    offline_refusal,
)

if TYPE_CHECKING:
    from hanrag.settings import JobSettings

log = logging.getLogger("hanrag.jobs")

SIGNATURE_HEADER = "X-Hanrag-Signature"

# Per-request headers: what a caller may not set, and how much it may send.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "proxy-authorization",
        "proxy-connection",
        "idempotency-key",
        "x-hanrag-job-id",
        SIGNATURE_HEADER.lower(),
    }
)
MAX_HEADERS = 20
MAX_HEADER_NAME = 100
MAX_HEADER_VALUE = 4096
MAX_HEADERS_BYTES = 8192
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")
_SLASHES = re.compile(r"/{2,}")


class CallbackNotAllowed(InvalidInputError):
    """The callback URL names a destination this server does not call."""

    code = "callback_not_allowed"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, field="callback_url")


class CallbackUnresolvable(CallbackNotAllowed):
    """The callback host has no address (now): refused at submit, retried at delivery."""


# --------------------------------------------------------------------- hosts


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """The addresses a connection to ``host`` may use (raises OSError when there are none).

    Module-level so that tests can stand in for DNS."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    if not found:
        raise OSError(f"no address for {host}")
    return found


@dataclass(frozen=True)
class Destination:
    """A checked callback destination: where to connect and what to send there."""

    url: httpx.URL
    host: str  # lower-case ASCII, as matched against the settings
    addresses: tuple[IPAddress, ...]  # every one checked; connect to these only
    credentials: bool  # the configured callback_headers may be sent

    def pinned(self, ip: IPAddress) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
        """The URL with its host replaced by ``ip``, the Host header, and the TLS name."""
        ip = canonical(ip)
        extensions: dict[str, Any] = {}
        if self.url.scheme == "https":
            try:
                ipaddress.ip_address(self.host)
            except ValueError:
                extensions["sni_hostname"] = self.host
        return self.url.copy_with(host=str(ip)), {"Host": self.url.netloc.decode("ascii")}, extensions


def resolve_destination(url: str, settings: JobSettings, offline: list[str] | None = None) -> Destination:
    """Check a callback URL against ``jobs.callback_allow`` (resolving its host now) and,
    in offline mode (``offline``: the ``offline_allow`` entries), the offline rule first
    (before any lookup; code ``offline_refused``).

    Raises :class:`CallbackNotAllowed` (or :class:`CallbackUnresolvable`)."""
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii").rstrip(".").lower()
    except (httpx.InvalidURL, UnicodeError, TypeError):
        raise CallbackNotAllowed("callback_url is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise CallbackNotAllowed("callback_url must be an http or https URL")
    if parsed.userinfo:
        raise CallbackNotAllowed("callback_url must not carry credentials; send them in callback_headers")
    if not host:
        raise CallbackNotAllowed("callback_url has no host")
    if offline is not None and (why := offline_refusal(url, offline)) is not None:
        raise CallbackNotAllowed(f"callback_url: {why}", code="offline_refused")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    entries = list(settings.callback_allow)
    if not entries and (host in REFUSED_NAMES or host.endswith(".localhost")):
        raise CallbackNotAllowed(f"callbacks to {host} are not allowed (jobs.callback_allow)")
    try:
        addresses = resolve_host(host, port)
    except (OSError, UnicodeError, ValueError):
        raise CallbackUnresolvable(f"the callback host {host} cannot be resolved") from None
    if not destination_allowed(host, addresses, entries):
        raise CallbackNotAllowed(f"callbacks to {host} are not allowed (jobs.callback_allow)")
    credentials = credentials_go_to(host, addresses, list(settings.callback_header_hosts))
    return Destination(parsed, host, tuple(addresses), credentials)


def normalize_callback_url(url: str) -> str:
    """The URL with every run of ``/`` in its path collapsed to one (``http://h//a//b?x=//``
    is ``http://h/a/b?x=//``): receivers route ``/a/b``, not ``//a//b``. The query and
    fragment are left as they are."""
    parts = urlsplit(url)
    path = _SLASHES.sub("/", parts.path)
    return url if path == parts.path else urlunsplit(parts._replace(path=path))


def check_callback_destination(url: str, settings: JobSettings, offline: list[str] | None = None) -> None:
    """Submit-time check of a caller's callback URL (blocking: it resolves the host)."""
    resolve_destination(url, settings, offline)


# ------------------------------------------------------------------- headers


def _header_problem(name: str, value: str) -> str | None:
    if not isinstance(name, str) or not isinstance(value, str):
        return "header names and values must be strings"
    if not name or len(name) > MAX_HEADER_NAME or not _TOKEN.fullmatch(name):
        return f"a header name must be 1 to {MAX_HEADER_NAME} token characters"
    if name.lower() in _RESERVED_HEADERS or name.lower().startswith(("proxy-", "x-hanrag-")):
        return f"the header {name} is set by the server"
    if len(value) > MAX_HEADER_VALUE or not _VALUE.fullmatch(value):
        return f"the value of {name} must be at most {MAX_HEADER_VALUE} printable ASCII characters"
    return None


def check_callback_headers(headers: Mapping[str, str]) -> None:
    """Submit-time check of a caller's callback_headers (no smuggling, bounded size)."""
    if len(headers) > MAX_HEADERS:
        raise InvalidInputError(
            f"at most {MAX_HEADERS} callback headers",
            code="invalid_callback_headers",
            field="callback_headers",
        )
    seen: set[str] = set()
    size = 0
    for name, value in headers.items():
        problem = _header_problem(name, value)
        if problem is None and name.lower() in seen:
            problem = f"the header {name} is given twice"
        if problem is not None:
            raise InvalidInputError(problem, code="invalid_callback_headers", field="callback_headers")
        seen.add(name.lower())
        size += len(name) + len(value) + 4
    if size > MAX_HEADERS_BYTES:
        raise InvalidInputError(
            f"the callback headers exceed {MAX_HEADERS_BYTES} bytes",
            code="invalid_callback_headers",
            field="callback_headers",
        )


def check_callback(
    url: str | None, headers: Mapping[str, str], settings: JobSettings, offline: list[str] | None = None
) -> str | None:
    """Everything the submit of a job checks about its callback (blocking: resolves);
    returns the URL to store (:func:`normalize_callback_url`). ``offline``: the
    ``offline_allow`` entries in offline mode (None: not offline)."""
    check_callback_headers(headers)
    if url is None:
        return None
    url = normalize_callback_url(url)
    check_callback_destination(url, settings, offline)
    return url


def _outgoing_headers(
    destination: Destination,
    configured: Mapping[str, str],
    per_request: Mapping[str, str],
    fixed: Mapping[str, str],
) -> dict[str, str]:
    """Configured (only to their hosts), then per-request (valid ones), then the server's
    own; a later one replaces an earlier one of the same name in any case."""
    merged: dict[str, str] = {}
    spelled: dict[str, str] = {}

    def put(name: str, value: str) -> None:
        old = spelled.pop(name.lower(), None)
        if old is not None:
            merged.pop(old)
        spelled[name.lower()] = name
        merged[name] = value

    if destination.credentials:
        for name, value in configured.items():
            put(name, value)
    for name, value in per_request.items():
        if _header_problem(name, value) is None:  # records stored before the submit checked them
            put(name, value)
    for name, value in fixed.items():
        put(name, value)
    return merged


# ------------------------------------------------------------------ delivery


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: int = 300) -> bool:
    """For receivers (and tests): check a signature header against the raw body."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


async def deliver(
    url: str,
    payload: dict[str, Any],
    *,
    job_id: str,
    secret: str,
    headers: dict[str, str],
    settings: JobSettings,
    offline: list[str] | None = None,
) -> dict[str, Any]:
    """Try up to ``jobs.callback_attempts`` times; returns a delivery report (never raises).

    ``headers`` are the caller's own; ``jobs.callback_headers`` are added only for the
    hosts of ``jobs.callback_header_hosts``. The destination is checked again before each
    attempt and the connection goes to the checked address; a refused destination or a
    redirect ends the delivery at once. The report and the log carry no header values."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    last_error = ""
    attempt = 0
    async with httpx.AsyncClient(timeout=settings.callback_timeout_s, follow_redirects=False) as client:
        for attempt in range(1, settings.callback_attempts + 1):
            final = False
            try:
                destination = await asyncio.to_thread(resolve_destination, url, settings, offline)
            except CallbackUnresolvable:
                last_error = "callback_unresolvable"
            except CallbackNotAllowed as exc:
                last_error, final = exc.code, True
            else:
                fixed = {
                    "Content-Type": "application/json",
                    "Idempotency-Key": job_id,
                    "X-Hanrag-Job-Id": job_id,
                    SIGNATURE_HEADER: sign(secret, int(time.time()), body),
                }
                for ip in destination.addresses:
                    target, host_header, extensions = destination.pinned(ip)
                    request_headers = _outgoing_headers(
                        destination, settings.callback_headers, headers, {**host_header, **fixed}
                    )
                    try:
                        response = await client.post(
                            target, content=body, headers=request_headers, extensions=extensions
                        )
                    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                        last_error = type(exc).__name__
                        continue  # the next checked address of the host, if any
                    except httpx.HTTPError as exc:
                        last_error = type(exc).__name__
                        break
                    if response.status_code < 300:
                        return {"delivered": True, "attempts": attempt, "status": response.status_code}
                    last_error = f"HTTP {response.status_code}"
                    if response.status_code < 400:
                        last_error, final = f"HTTP {response.status_code}: redirects are not followed", True
                    elif response.status_code < 500 and response.status_code not in (408, 409, 425, 429):
                        final = True  # the receiver refuses this payload; retrying will not change that
                    break
            log.warning("callback failed", extra={"job_id": job_id, "attempt": attempt, "reason": last_error})
            if final:
                break
            if attempt < settings.callback_attempts:
                await asyncio.sleep(settings.callback_backoff_s * 2 ** (attempt - 1))
    return {"delivered": False, "attempts": attempt, "error": last_error}
