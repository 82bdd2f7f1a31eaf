"""The caller IP: X-Forwarded-For counts only when the socket peer is a trusted proxy."""

from __future__ import annotations

import ipaddress

import pytest

from shared.proxies import caller_ip

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


@pytest.mark.parametrize(
    "peer, forwarded_for, trusted, expected",
    [
        ("198.51.100.9", "203.0.113.1", PROXIES, "198.51.100.9"),  # peer not a proxy: header ignored
        ("10.0.0.1", "203.0.113.1", (), "10.0.0.1"),  # default: no proxy trusted
        ("10.0.0.1", "203.0.113.1", PROXIES, "203.0.113.1"),
        ("10.0.0.1", "203.0.113.1, 10.0.0.2", PROXIES, "203.0.113.1"),  # chain of trusted proxies
        ("10.0.0.1", "6.6.6.6, 203.0.113.1", PROXIES, "203.0.113.1"),  # client-supplied hops ignored
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", PROXIES, "10.0.0.3"),  # all trusted: the farthest
        ("10.0.0.1", "garbage, 10.0.0.2", PROXIES, "10.0.0.2"),  # stop at garbage
        ("10.0.0.1", None, PROXIES, "10.0.0.1"),
        ("2001:db8::5", "2001:db9::1", PROXIES, "2001:db9::1"),
        ("::ffff:10.0.0.1", "203.0.113.1", PROXIES, "203.0.113.1"),  # IPv4-mapped peer
        (None, "203.0.113.1", PROXIES, ""),
    ],
)
def test_caller_ip(peer: str | None, forwarded_for: str | None, trusted: tuple, expected: str) -> None:
    assert caller_ip(peer, forwarded_for, trusted) == expected
