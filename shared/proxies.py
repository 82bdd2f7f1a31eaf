"""The caller's IP: the socket peer, or the client a trusted proxy names in X-Forwarded-For.

The API uses it for per-caller rate limiting of requests without a known token and for logs;
the client middleware (hitstream.client) for the visitor IP of a page it records.
X-Forwarded-For is read right to left and trusted only while each hop is a trusted proxy,
so a client cannot choose its own address by sending the header itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def caller_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The address of whoever sent the request; "" when the server cannot tell (no peer)."""
    caller = peer or ""
    if not trusted or not forwarded_for or not is_trusted(caller, trusted):
        return caller
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        if not _is_address(hop):
            return caller  # garbage in the header: stop at the last proxy we trust
        caller = hop
        if not is_trusted(hop, trusted):
            return hop
    return caller


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in trusted)
