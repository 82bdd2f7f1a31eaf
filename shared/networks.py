"""A set of IPv4 and IPv6 networks with a fast membership test.

Spamhaus DROP has about 1,500 networks and exclusion lists can grow, so a linear scan per
pageview would dominate the pipeline. The networks are merged into disjoint, sorted address
ranges once; a lookup is then one binary search.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable
from typing import Generic, TypeVar

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# One IP version's networks: collapse_addresses takes either kind, never a mix.
VersionNetwork = TypeVar("VersionNetwork", ipaddress.IPv4Network, ipaddress.IPv6Network)


class _Ranges(Generic[VersionNetwork]):
    """Disjoint, sorted [first, last] address ranges of one IP version."""

    def __init__(self, networks: list[VersionNetwork]) -> None:
        merged = list(ipaddress.collapse_addresses(networks))
        self.firsts = [int(network.network_address) for network in merged]
        self.lasts = [int(network.broadcast_address) for network in merged]

    def __contains__(self, address: int) -> bool:
        index = bisect_right(self.firsts, address) - 1
        return index >= 0 and address <= self.lasts[index]


class NetworkSet:
    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        networks = list(networks)
        self._v4 = _Ranges([n for n in networks if isinstance(n, ipaddress.IPv4Network)])
        self._v6 = _Ranges([n for n in networks if isinstance(n, ipaddress.IPv6Network)])

    def __bool__(self) -> bool:
        return bool(self._v4.firsts or self._v6.firsts)

    def __contains__(self, address: IPAddress) -> bool:
        return self.holds(address.version, int(address))

    def holds(self, version: int, address: int) -> bool:
        """Whether the IPv``version`` address ``address`` (as an integer) is in the set."""
        return address in (self._v4 if version == 4 else self._v6)
