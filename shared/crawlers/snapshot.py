"""The crawler knowledge a process uses: who a user agent claims to be (the vendored identity
table) and whether its address bears that out (the current ranges document, read again when
``hitstream crawlers update`` replaces it).

Build one ``Crawlers`` per process (``Crawlers.from_settings``) and call ``identify`` and
``verify`` on it; ``shared.crawlers.identity.identify`` and
``shared.crawlers.verification.verify`` are the same calls on a process-wide default.
"""

from __future__ import annotations

from pathlib import Path

from shared.config import Settings
from shared.crawlers.identity import Crawler, IdentityTable, vendored_identities
from shared.crawlers.verification import Verdict, WatchedRanges
from shared.replaced_files import FILE_CHECK_SECONDS


class Crawlers:
    def __init__(
        self,
        ranges_file: Path | None,
        check_seconds: float = FILE_CHECK_SECONDS,
        identities: IdentityTable | None = None,
    ) -> None:
        self._identities = identities or vendored_identities()
        self._ranges = WatchedRanges(ranges_file, check_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> Crawlers:
        return cls(settings.crawler_ranges)

    def identify(self, user_agent: str) -> Crawler | None:
        """The crawler ``user_agent`` names, or None for a human."""
        return self._identities.identify(user_agent)

    def verify(self, crawler: Crawler, ip: str) -> Verdict:
        """Whether ``ip`` is in the lists ``crawler``'s operator publishes for it."""
        return self._ranges.verify(crawler, ip)

    def describe(self) -> str:
        """One line for an operator: which ranges are in use, and from where."""
        ranges = self._ranges.current().ranges
        return f"crawler ranges of {ranges.snapshot} ({ranges.prefix_count:,} prefixes) from {self._ranges.source}"
