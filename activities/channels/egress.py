"""Outbound HTTP that cannot be pointed at Parcours' own network (server-side request forgery).

Webhook steps and the webhook channel call URLs that journey authors write and that customer data can fill in
(Liquid). ``guarded_client`` is an httpx client whose every TCP connection is checked **on the address it is
about to connect to**, after DNS resolution: the name is resolved once, each address is checked, and the socket
connects to a checked address (never to the name again), so DNS rebinding cannot swap a public answer for a
private one, and a redirect (followed or not) opens a new connection that is checked the same way. Proxies from
the environment are ignored (a proxy would make the check meaningless).

Refused unless allowed: loopback, private (RFC 1918, unique local), carrier-grade NAT, link-local (cloud metadata
at 169.254.169.254), multicast, unspecified and reserved ranges, in IPv4, IPv6 and IPv4-mapped IPv6 (any spelling
of the address: ``127.1``, ``0x7f000001``, ``2130706433``, ``[::ffff:127.0.0.1]`` all resolve to a checked
address). ``PARCOURS_WEBHOOK_ALLOW_HOSTS`` names hosts (exact names, e.g. ``localhost``) or networks (CIDR,
e.g. ``10.1.0.0/16``, ``127.0.0.0/8``) that may be reached all the same; ``parcours dev`` and the tests allow
loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RESOLVE_TIMEOUT_SECONDS = 5.0


class EgressRefusedError(Exception):
    """The destination resolves only to addresses Parcours may not call (not an httpx error: it is never retried
    as a network failure would be)."""


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is an ordinary public unicast address (an IPv4-mapped IPv6 address counts as its IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address.sixtofour is not None and not is_public(address.sixtofour):
            return False
        if address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64: the embedded IPv4 address decides
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True)
class EgressPolicy:
    """Which destinations outbound calls may reach besides public addresses."""

    hosts: frozenset[str] = frozenset()
    """Host names allowed whatever they resolve to (lower case, exact)."""
    networks: tuple[IPNetwork, ...] = ()
    """Networks allowed although not public."""

    @classmethod
    def of(cls, allowed: Iterable[str]) -> EgressPolicy:
        """From ``PARCOURS_WEBHOOK_ALLOW_HOSTS`` entries: a CIDR network or address, else a host name."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in allowed:
            text = entry.strip().strip("[]").lower()
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                hosts.add(text.rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def permits(self, address: IPAddress) -> bool:
        if is_public(address):
            return True
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(a in n for a in candidates for n in self.networks if a.version == n.version)

    def allowed_addresses(self, host: str, addresses: list[str]) -> list[str]:
        """The addresses of ``host`` that may be connected to, in resolver order.

        Raises:
            EgressRefusedError: none may.
        """
        if host.strip("[]").lower().rstrip(".") in self.hosts:
            return addresses
        allowed = [a for a in addresses if self.permits(ipaddress.ip_address(a.split("%", 1)[0]))]
        if not allowed:
            shown = ", ".join(dict.fromkeys(addresses)) or "nothing"
            raise EgressRefusedError(
                f"refused to connect to {host} ({shown}): loopback, private, link-local, multicast and reserved "
                "addresses are not called unless PARCOURS_WEBHOOK_ALLOW_HOSTS allows them"
            )
        return allowed


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (numeric spellings included: ``127.1`` is 127.0.0.1)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
        )
    except (OSError, TimeoutError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the policy applied to the resolved address of every connection."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = self._policy.allowed_addresses(host, await resolve(host, port))
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefusedError("unix sockets are not called")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connections go through ``GuardedBackend``."""

    def __init__(self, policy: EgressPolicy, *, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


def guarded_client(allowed: Iterable[str], *, timeout: float, follow_redirects: bool = False) -> httpx.AsyncClient:
    """An httpx client for calls to URLs from journeys: every connection is checked (see the module docstring)."""
    return httpx.AsyncClient(
        transport=GuardedTransport(EgressPolicy.of(allowed)),
        timeout=timeout,
        follow_redirects=follow_redirects,
        trust_env=False,
    )
