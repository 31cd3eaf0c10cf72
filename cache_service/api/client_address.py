"""Which client a request comes from, for per-address limits (account registration).

The socket peer, unless it is one of `Settings.trusted_proxies`: then `X-Forwarded-For`
is read from the right (each proxy appends the address it received from), trusted hops
skipped, and the first untrusted address is the client. A client behind no trusted proxy
cannot choose its address by sending the header. IPv6 clients count per /64 (one host
holds a whole /64 and could otherwise rotate through it).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web

from .keys import SETTINGS

__all__ = ["client_address", "resolve_client"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def _networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _parse(text: str) -> Address | None:
    """An address as proxies write a hop: `a.b.c.d`, `a.b.c.d:port`, `v6` or `[v6]:port`."""
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _key(address: Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def resolve_client(peer: str | None, forwarded: list[str], proxies: tuple[str, ...]) -> str:
    """The client's address key from the socket peer and the `X-Forwarded-For` values."""
    current = _parse(peer or "")
    if current is None:
        return "unknown"  # not an IP peer (a unix socket): one bucket
    networks = _networks(proxies)

    def trusted(address: Address) -> bool:
        return any(address in n for n in networks)

    if not trusted(current):
        return _key(current)
    hops = [h for value in forwarded for h in value.split(",")]
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:  # garbled: nothing left of it is believed
            break
        current = address
        if not trusted(address):
            break
    return _key(current)


def client_address(request: web.Request) -> str:
    proxies = request.app[SETTINGS].trusted_proxies
    return resolve_client(request.remote, request.headers.getall("X-Forwarded-For", []), proxies)
