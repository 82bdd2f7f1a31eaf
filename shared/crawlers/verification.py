"""Is a request that names a crawler from an address its operator publishes?

``verified``: the address is in one of the crawler's published lists; ``spoofed``: the
operator publishes lists for it and the address is in none; ``unverifiable``: nobody
publishes a list for that crawler (or no usable address was given), so no verdict is
invented.

A crawler's lists are merged once into one ``NetworkSet`` (disjoint sorted intervals, one
binary search per look-up: ``bench/crawler_bench.py`` measures 100, 3,000 and 30,000
prefixes), built on first use per distinct combination of lists.

The lists come from the ranges document (shared.crawlers.ranges) in use:
``HITSTREAM_CRAWLER_RANGES`` when set and readable, else the vendored snapshot.
``WatchedRanges`` reads that file again when it was replaced (``hitstream crawlers update``
renames a new one over it), checked at most once every FILE_CHECK_SECONDS
(shared.replaced_files), so workers and API processes pick up a new snapshot without a
restart. A replacement that cannot be read leaves the lists in use answering.
"""

from __future__ import annotations

import enum
import functools
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

from shared.config import load_settings
from shared.crawlers.identity import Crawler
from shared.crawlers.ranges import VENDORED_RANGES, Ranges, UnusableRanges, load_ranges
from shared.networks import NetworkSet
from shared.replaced_files import FILE_CHECK_SECONDS, NEVER_READ, FileIdentity, file_identity

log = logging.getLogger(__name__)


class Verdict(enum.StrEnum):
    VERIFIED = "verified"
    SPOOFED = "spoofed"
    UNVERIFIABLE = "unverifiable"


class RangeTable:
    """The verdicts of one ranges document."""

    def __init__(self, ranges: Ranges) -> None:
        self.ranges = ranges
        self._sets: dict[tuple[str, ...], NetworkSet] = {}

    def _networks(self, keys: tuple[str, ...]) -> NetworkSet:
        networks = self._sets.get(keys)
        if networks is None:
            lists = [self.ranges.lists[key] for key in keys if key in self.ranges.lists]
            networks = self._sets[keys] = NetworkSet(network for ranges in lists for network in ranges.networks)
        return networks

    def verify(self, crawler: Crawler, ip: str) -> Verdict:
        if not crawler.ranges or not ip:
            return Verdict.UNVERIFIABLE
        networks = self._networks(crawler.ranges)
        if not networks:  # none of its lists is in this document
            return Verdict.UNVERIFIABLE
        address = _address(ip)
        if address is None:
            return Verdict.UNVERIFIABLE
        return Verdict.VERIFIED if networks.holds(*address) else Verdict.SPOOFED


def _address(ip: str) -> tuple[int, int] | None:
    """(version, integer) of an IP address text, an IPv4-mapped IPv6 address as its IPv4
    address; None when it is none. ``inet_pton`` parses in C, ~10x faster than ``ipaddress``
    (bench/crawler_bench.py), which would be most of a verify's cost."""
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
    except (OSError, ValueError):  # ValueError: an embedded NUL
        pass
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
    except (OSError, ValueError):
        return None
    if value >> 32 == 0xFFFF:
        return 4, value & 0xFFFF_FFFF
    return 6, value


@functools.cache
def vendored_table() -> RangeTable:
    return RangeTable(load_ranges(VENDORED_RANGES))


class WatchedRanges:
    """The range table of ``path`` (None: the vendored snapshot), read again when the file
    is replaced; the vendored snapshot while ``path`` is missing or was never readable."""

    def __init__(
        self,
        path: Path | None,
        check_seconds: float = FILE_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self._check_seconds, self._clock = path, check_seconds, clock
        self.table = vendored_table()
        self.source = "the vendored snapshot"  # where ``table`` was read from
        self._read: FileIdentity | None = NEVER_READ
        self._next_check = float("-inf")
        self.current()

    def current(self) -> RangeTable:
        """The table in use, after reading the file again if it was replaced (checked at most
        once every ``check_seconds``)."""
        if self.path is None or self._clock() < self._next_check:
            return self.table
        self._next_check = self._clock() + self._check_seconds
        identity = file_identity(self.path)
        if identity == self._read:
            return self.table
        self._read = identity
        if identity is None:
            log.info(
                "HITSTREAM_CRAWLER_RANGES=%s does not exist (yet): verifying with the vendored snapshot", self.path
            )
            return self.table
        try:
            ranges = load_ranges(self.path)
        except UnusableRanges as error:
            log.warning("HITSTREAM_CRAWLER_RANGES: %s; the lists in use stay", error)
            return self.table
        self.table, self.source = RangeTable(ranges), str(self.path)
        log.info("crawler ranges of %s read from %s (%d prefixes)", ranges.snapshot, self.path, ranges.prefix_count)
        return self.table

    def verify(self, crawler: Crawler, ip: str) -> Verdict:
        return self.current().verify(crawler, ip)


@functools.cache
def default_ranges() -> WatchedRanges:
    """This process's ranges: HITSTREAM_CRAWLER_RANGES, else the vendored snapshot."""
    return WatchedRanges(load_settings().crawler_ranges)


def verify(crawler: Crawler, ip: str) -> Verdict:
    """Whether ``ip`` is an address ``crawler``'s operator publishes for it (see the module)."""
    return default_ranges().verify(crawler, ip)
