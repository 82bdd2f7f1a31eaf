"""The enrichment pipeline: an ordered list of small named steps over one envelope.

A pageview envelope becomes a PageviewRow, an event envelope (``kind == "event"``) an
EventRow: the same steps, exclusions and spam rules, plus the event's name and properties.
A known crawler's pageview or event also becomes a CrawlerHitRow; an AI fetch (``kind ==
"ai_fetch"``) becomes only that, through the same steps.

Each step fills in part of the row or answers a drop reason; the first drop ends the run.
``process`` is pure apart from in-memory caches: no Redis, no store, so the batch job owns
all I/O and this is testable on its own.

Step order, and why:
  url         host, normalised path, query, UTM and hk_qr
  referrer    referrer and its host, language, screen and viewport (the spam step reads
              the referrer host)
  geo         country, region, city, ASN, provider (country exclusions compare the country)
  exclusions  operator rules: instance-wide, then per site
  spam        Spamhaus DROP networks, referrer-spam hosts
  user_agent  browser, OS, device, bot flag (after the drops, which need only the raw string)
  crawler     the known crawler a user agent names, with the verdict on its address (needs
              the IP, so before forget_ip; a known crawler is flagged as a bot)
  forget_ip   the raw visitor IP leaves the working context; the rows never had it

``StepFailed.step`` is one of these names, or "envelope" when the envelope itself cannot be
read (a field of the wrong type or out of the store's range, see workers.envelope_check; a
malformed visitor IP, an event without a name or with a nested property).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shared.config import Settings
from shared.control.exclusions import ExclusionRule
from shared.crawlers.snapshot import Crawlers
from shared.envelope import Envelope
from shared.networks import NetworkSet
from workers.envelope_check import check_envelope
from workers.pipeline.client import copy_client_context
from workers.pipeline.crawlers import CrawlerHits
from workers.pipeline.exclusions import Exclusions
from workers.pipeline.geo import GeoLookup
from workers.pipeline.spam import SpamFilter, load_drop_networks, load_spam_hosts
from workers.pipeline.url import parse_page_url
from workers.pipeline.user_agent import UserAgentParser
from workers.pipeline.visit import Visit, forget_ip
from workers.records import Drop, DropReason, StoredRow
from workers.redaction import without_ip


class StepFailed(Exception):
    """A step raised: the envelope is a poison record (the caller dead-letters it).

    ``cause`` is the error's type and message with the visitor IP redacted, and the original
    exception is not chained, so logging this error can never leak the IP.
    """

    def __init__(self, step: str, cause: str) -> None:
        super().__init__(f"pipeline step {step!r} failed: {cause}")
        self.step = step
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    run: Callable[[Visit], DropReason | None]


class Pipeline:
    def __init__(self, geo: GeoLookup, spam: SpamFilter, user_agents: UserAgentParser, crawlers: CrawlerHits) -> None:
        self._exclusions = Exclusions()
        self.steps: tuple[Step, ...] = (
            Step("url", parse_page_url),
            Step("referrer", copy_client_context),
            Step("geo", geo.enrich),
            Step("exclusions", self._exclusions.check),
            Step("spam", spam.check),
            Step("user_agent", user_agents.enrich),
            Step("crawler", crawlers.record),
            Step("forget_ip", forget_ip),
        )

    def update_exclusions(self, rules: Iterable[ExclusionRule]) -> None:
        """Swap in the current rule set (atomically; safe while ``process`` runs)."""
        self._exclusions.update(rules)

    def process(self, envelope: Envelope) -> tuple[StoredRow, ...] | Drop:
        """The rows to store (the PageviewRow or EventRow, then its CrawlerHitRow if a known
        crawler sent it; an AI fetch's CrawlerHitRow alone), or why it is dropped; StepFailed
        if a step breaks."""
        step_name = "envelope"
        try:
            check_envelope(envelope)
            visit = Visit.start(envelope)
            for step in self.steps:
                step_name = step.name
                reason = step.run(visit)
                if reason is not None:
                    return Drop(site_id=envelope.site_id, reason=reason, timestamp=visit.row.timestamp)
            hit = visit.crawler_hit
            if envelope.kind == "ai_fetch":  # its row was only the working copy
                return () if hit is None else (hit,)
            return (visit.row,) if hit is None else (visit.row, hit)
        except Exception as error:
            raise StepFailed(step_name, without_ip(f"{type(error).__name__}: {error}", envelope.visitor_ip)) from None


def build_pipeline(settings: Settings) -> Pipeline:
    """Load the GeoIP databases (a missing one is a warning), the UA parser and spam lists.
    A malformed spam list file raises SpamListError naming the file and line."""
    drop_file = settings.spamhaus_drop_file
    return Pipeline(
        geo=GeoLookup(settings.geoip_city_db, settings.geoip_asn_db),
        spam=SpamFilter(
            drop_networks=load_drop_networks(drop_file) if drop_file else NetworkSet(),
            spam_hosts=load_spam_hosts(settings.referrer_spam_file),
        ),
        user_agents=UserAgentParser(),
        crawlers=CrawlerHits(Crawlers.from_settings(settings)),
    )
