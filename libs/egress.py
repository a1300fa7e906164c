"""The egress guard: every connection Slipway opens on a customer's behalf passes here.

A customer names URLs (build sources, buildpacks, log drains, Dockerfile `ADD`); the
platform fetches them from inside its own network, where loopback, the host's interfaces,
private ranges and cloud metadata (169.254.169.254) are reachable. The guard:

- parses the URL once (yarl, as aiohttp will) and refuses other schemes, user-info where
  the caller does not expect credentials, and characters that parsers disagree on;
- resolves the host ONCE (getaddrinfo, so `2130706433`, `0x7f.0.0.1` and `127.1` mean
  what the connecting code would make of them) and checks EVERY address it returns;
- judges IPv4-mapped, IPv4-compatible, NAT64 (64:ff9b::/96), 6to4 (2002::/16) and Teredo
  addresses by the IPv4 address they carry;
- connects only to the addresses it checked (a pinned aiohttp resolver, or a socket to
  the address for syslog), while TLS still verifies the name the customer gave;
- follows redirects by hand, re-checking every hop (https -> http is refused), and bounds
  time and bytes.

Refused by default (`DEFAULT_DENY`): loopback, RFC 1918 private, shared (CGNAT), link-local,
multicast, reserved, unspecified, benchmarking and IETF protocol ranges, unique-local and
site-local IPv6, every address of this host's interfaces, and the (address, port) pairs of
the platform's services. The documentation ranges (192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24) are NOT refused by default: on some networks real services live there.
The ranges and the check itself are in libs/egresspolicy.py (re-exported here).

Operator settings:
    SLIPWAY_EGRESS_ALLOW     CIDRs reachable despite the default deny (on-premise drains).
                             The platform's own (address, port) pairs stay refused.
    SLIPWAY_EGRESS_DENY      more CIDRs to refuse; wins over SLIPWAY_EGRESS_ALLOW.
    SLIPWAY_EGRESS_PLATFORM  more host:port pairs of platform services to refuse.

Errors:
    EgressError (SlipwayError)
    ├── EgressRefused   "egress_refused"  the destination is not one Slipway connects to
    └── FetchFailed     "fetch_failed"    the fetch ran but failed: status, size, time
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from slipway.libs.egresspolicy import (
    DEFAULT_DENY,
    PLATFORM_KIND,
    EgressPolicy,
    IPAddress,
    IPNetwork,
    embedded_ipv4,
    policy_for,
    strip_scope,
)
from slipway.libs.errors import SlipwayError

_CHUNK = 64 * 1024
_RESOLVE_TIMEOUT = 10.0
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "syslog+tls": 6514, "syslog": 514}


class EgressError(SlipwayError):
    """Root of the guard's errors; `message` is written for the customer."""

    code = "egress_error"


class EgressRefused(EgressError):
    """The URL names a destination Slipway does not connect to on a customer's behalf."""

    code = "egress_refused"


class FetchFailed(EgressError):
    """The destination was allowed, but the fetch failed (status, size, time, network)."""

    code = "fetch_failed"


@dataclass(frozen=True)
class Destination:
    """A checked URL: where to connect (only `addresses`) and the name TLS verifies."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    url: str = ""

    @property
    def is_literal(self) -> bool:
        """Whether the customer wrote an address rather than a name."""
        return _literal(self.host) is not None


def _literal(host: str) -> IPAddress | None:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host.strip("[]"))
    return None


def _parse(url: str, schemes: Collection[str], *, userinfo: bool) -> yarl.URL:
    shown = url if len(url) <= 200 else url[:200] + "..."
    # Characters that parsers read differently (backslash as a slash, whitespace cut off)
    # are how a URL shows one host to a checker and another to a client.
    if any(ord(ch) <= 0x20 or ord(ch) >= 0x7F or ch == "\\" for ch in url):
        raise EgressRefused(
            f"{shown!r} holds spaces, control characters, backslashes or non-ASCII "
            "characters: write the URL with percent-encoding and punycode"
        )
    try:
        parsed = yarl.URL(url)
        port = parsed.port
    except ValueError as exc:
        raise EgressRefused(f"{shown!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in sorted(schemes))
        raise EgressRefused(f"{shown!r}: only {allowed} URLs are accepted here")
    if not parsed.host or port is None:
        raise EgressRefused(f"{shown!r} names no host: write a full URL like https://host/path")
    if (parsed.raw_user is not None or parsed.raw_password is not None) and not userinfo:
        raise EgressRefused(
            f"{shown!r} has credentials before the host ('user@'): they are not accepted "
            "here; remove the part before '@'"
        )
    return parsed


async def _resolve(host: str, port: int) -> list[IPAddress]:
    literal = _literal(host)
    if literal is not None:
        return [strip_scope(literal)]
    try:
        # A resolver that never answers must not hold an API request or a build forever.
        async with asyncio.timeout(_RESOLVE_TIMEOUT):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
    except TimeoutError:
        raise FetchFailed(f"resolving {host} took longer than {_RESOLVE_TIMEOUT:g} s") from None
    except (OSError, UnicodeError) as exc:
        raise FetchFailed(f"{host} does not resolve ({exc}): check the host name") from None
    found: list[IPAddress] = []
    for info in infos:
        address = strip_scope(ipaddress.ip_address(info[4][0]))
        if address not in found:
            found.append(address)
    if not found:
        raise FetchFailed(f"{host} resolves to no address: check the host name")
    return found


async def resolve_checked(
    url: str,
    policy: EgressPolicy,
    *,
    schemes: Collection[str],
    allow_userinfo: bool = False,
) -> Destination:
    """Parse `url`, resolve its host once and check every address; raise EgressRefused."""
    parsed = _parse(url, schemes, userinfo=allow_userinfo)
    host = parsed.host or ""
    port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 0)
    addresses = await _resolve(host, port)
    for address in addresses:
        kind = policy.refusal(address, port)
        if kind is not None:
            raise EgressRefused(
                _refusal_message(host, address, port, kind),
                details={"host": host, "address": str(address), "port": str(port)},
            )
    return Destination(
        scheme=parsed.scheme,
        host=host,
        port=port,
        addresses=tuple(str(a) for a in addresses),
        url=str(parsed),
    )


def _refusal_message(host: str, address: IPAddress, port: int, kind: str) -> str:
    subject = f"{host} is" if _literal(host) == address else f"{host} resolves to {address},"
    if kind == PLATFORM_KIND:
        return f"{subject} port {port} of Slipway's own services: Slipway does not connect there"
    return (
        f"{subject} {kind}: Slipway does not connect there; use a public address, "
        "or ask the operator to allow that range (SLIPWAY_EGRESS_ALLOW)"
    )


class PinnedResolver(AbstractResolver):
    """An aiohttp resolver that answers only with the addresses the guard checked."""

    def __init__(self, destination: Destination) -> None:
        self._destination = destination

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self._destination.host:
            # aiohttp only asks for the host it was given; anything else is a bug or a trick.
            raise OSError(f"{host} was not checked by the egress guard")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port or self._destination.port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=socket.IPPROTO_TCP,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self._destination.addresses
        ]

    async def close(self) -> None:
        return None


@contextlib.asynccontextmanager
async def pinned_session(
    destination: Destination, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[aiohttp.ClientSession]:
    """A session that connects only to `destination`'s checked addresses.

    Use it for that destination's URL only, with `allow_redirects=False`; TLS verifies
    `destination.host`. No proxy from the environment is used, no DNS is cached.
    """
    connector = aiohttp.TCPConnector(
        resolver=PinnedResolver(destination),
        use_dns_cache=False,
        ssl=ssl_context if ssl_context is not None else True,
        force_close=True,
    )
    async with aiohttp.ClientSession(
        connector=connector, trust_env=False, auto_decompress=False
    ) as session:
        yield session


async def open_stream(
    destination: Destination, *, ssl_context: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP (or TLS, verifying `destination.host`) stream to one of the checked addresses."""
    last: OSError | None = None
    for address in destination.addresses:
        try:
            return await asyncio.open_connection(
                address,
                destination.port,
                ssl=ssl_context,
                server_hostname=destination.host if ssl_context is not None else None,
            )
        except OSError as exc:
            last = exc
    raise FetchFailed(
        f"could not connect to {destination.host}:{destination.port}: {last}"
    ) from None


async def fetch_to_file(
    url: str,
    dest: Path,
    *,
    policy: EgressPolicy,
    max_bytes: int,
    timeout: float,
    max_redirects: int = 3,
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """GET `url` into `dest` through the guard, re-checking every redirect; return the size.

    Raises EgressRefused for a refused hop, FetchFailed for a status other than 200, more
    than `max_bytes`, more than `max_redirects` redirects or more than `timeout` seconds.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _follow(
                url, dest, policy, max_bytes, max_redirects, dict(headers or {}), ssl_context
            )
    except TimeoutError:
        raise FetchFailed(
            f"fetching {_shown(url)} took longer than {timeout:g} s: serve it faster or "
            "make it smaller"
        ) from None


async def fetch_once_to_file(
    destination: Destination,
    dest: Path,
    *,
    max_bytes: int,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """GET an already-trusted destination into `dest`, following no redirect; the size.

    For platform URLs the caller vouches for (the gateway's own signed URLs): no policy
    check, but the same pinning, bounds, and a redirect is a failure.
    """
    try:
        async with asyncio.timeout(timeout):
            location, size = await _get_once(
                destination, dest, dict(headers or {}), max_bytes, ssl_context
            )
    except TimeoutError:
        raise FetchFailed(
            f"fetching {_shown(destination.url)} took longer than {timeout:g} s"
        ) from None
    if location is not None:
        raise FetchFailed(f"{_shown(destination.url)} redirects: not followed here")
    return size


async def _follow(
    url: str,
    dest: Path,
    policy: EgressPolicy,
    max_bytes: int,
    max_redirects: int,
    headers: dict[str, str],
    ssl_context: ssl.SSLContext | None,
) -> int:
    first_origin: tuple[str, str, int] | None = None
    for _hop in range(max_redirects + 1):
        destination = await resolve_checked(url, policy, schemes=("http", "https"))
        origin = (destination.scheme, destination.host, destination.port)
        first_origin = first_origin or origin
        # Credentials the caller gave are for the first origin, not where it redirects.
        sent = headers if origin == first_origin else {}
        location, size = await _get_once(destination, dest, sent, max_bytes, ssl_context)
        if location is None:
            return size
        following = yarl.URL(destination.url).join(yarl.URL(location))
        if destination.scheme == "https" and following.scheme == "http":
            raise EgressRefused(
                f"{_shown(destination.url)} redirects from https to http "
                f"({_shown(str(following))}): Slipway does not downgrade; serve it over https"
            )
        url = str(following)
    raise FetchFailed(
        f"{_shown(url)}: more than {max_redirects} redirects; link the final URL instead"
    )


async def _get_once(
    destination: Destination,
    dest: Path,
    headers: Mapping[str, str],
    max_bytes: int,
    ssl_context: ssl.SSLContext | None,
) -> tuple[str | None, int]:
    """One GET to a checked destination: (redirect Location, 0), or (None, bytes saved)."""
    sent = {"Accept-Encoding": "identity", **headers}
    try:
        async with (
            pinned_session(destination, ssl_context=ssl_context) as session,
            session.get(destination.url, headers=sent, allow_redirects=False) as response,
        ):
            if response.status in _REDIRECTS and "Location" in response.headers:
                return response.headers["Location"], 0
            if response.status != 200:
                raise FetchFailed(
                    f"{_shown(destination.url)} answered HTTP {response.status}: "
                    "check the URL is right and public"
                )
            if (response.content_length or 0) > max_bytes:
                raise _too_large(destination.url, max_bytes)
            return None, await _save(response, dest, destination.url, max_bytes)
    except (aiohttp.ClientError, OSError) as exc:
        raise FetchFailed(f"fetching {_shown(destination.url)} failed: {_describe(exc)}") from None


async def _save(response: aiohttp.ClientResponse, dest: Path, url: str, max_bytes: int) -> int:
    size = 0
    with dest.open("wb") as out:
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(url, max_bytes)
            out.write(chunk)
    return size


def _too_large(url: str, max_bytes: int) -> FetchFailed:
    return FetchFailed(
        f"{_shown(url)} is larger than the limit of {max_bytes} bytes",
        details={"reason": "too_large"},
    )


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _shown(url: str) -> str:
    """A URL as the customer may see it: credentials hidden, length bounded."""
    with contextlib.suppress(ValueError):
        parsed = yarl.URL(url)
        if parsed.raw_user is not None or parsed.raw_password is not None:
            url = str(parsed.with_user(None))
    return url if len(url) <= 200 else url[:200] + "..."


__all__ = [
    "DEFAULT_DENY",
    "Destination",
    "EgressError",
    "EgressPolicy",
    "EgressRefused",
    "FetchFailed",
    "IPAddress",
    "IPNetwork",
    "PinnedResolver",
    "embedded_ipv4",
    "fetch_once_to_file",
    "fetch_to_file",
    "open_stream",
    "pinned_session",
    "policy_for",
    "resolve_checked",
]
