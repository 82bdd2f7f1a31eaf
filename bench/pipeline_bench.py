"""Envelopes/s of ``Pipeline.process`` with GeoIP City + ASN loaded, against the previous
(before-style) path in the same run; and what the crawler step (classification of the user
agent, verification of a crawler's address) costs per event, as a same-run A/B.

    .venv/bin/python -m bench.pipeline_bench [--envelopes 60000] [--warmup 20000] [--rounds 5]

Needs the test and bench extras (``pip install -e '.[test,bench]'``: geoip2 for the baseline).

Workload, built once and fed to both sides in the same order:
  user agents  the Zipf-skewed mix of bench/ua_mix.py
  visitors     each visitor address sends a geometric number of pageviews (mean
               ``--views-per-visitor``) close together: repeat visitors plus a long tail of
               one-pageview addresses. 55% IPv4 and 20% IPv6 in the test databases'
               networks, 22% public IPv4 in neither, 3% private
  referrers    half none, the rest from ~300 hosts with a few paths each
  pages        ~300 paths, some with UTM tags
The GeoIP databases are tests/geoip_fixtures.py's, whose records have GeoLite2's shape.

Sides:
  pipeline     ``build_pipeline``: maxminddb readers, LRU caches per address, URL, referrer
  before       the same steps with the old geo step (geoip2 Reader model objects) and no
               address, URL or referrer caches (the user-agent cache was there before too)
Each side processes the first ``--warmup`` envelopes untimed (a long-running worker's caches
are warm), then the rest timed. The rates are CPU time of this process (the machine may be
shared; wall time is printed too). The rows of both sides are compared: they must be equal.

Crawler step A/B (``--rounds`` rounds, the two sides taking turns, medians of CPU µs per
event):
  with        ``build_pipeline`` as shipped (the crawler step included)
  without     the same pipeline object with the crawler step taken out
on two workloads: the realistic mix above (its bots and tools are a few per cent of events),
and a crawler-only stream (known AI and search crawlers plus tools, each address inside its
operator's published ranges for half of the events and outside them for the other half), where
every event is classified, verified and becomes a crawler hit.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import geoip2.database
import geoip2.errors

from bench.ua_mix import user_agent_stream
from shared.config import Settings
from shared.envelope import Envelope
from tests import geoip_fixtures
from workers.pipeline import Pipeline, build_pipeline, client, url, visit
from workers.pipeline.geo import is_public
from workers.pipeline.pipeline import Step
from workers.pipeline.visit import Visit
from workers.records import CrawlerHitRow, Drop, StoredRow

SITE_ID = "5b4f0a4e-0f43-4b8e-9d6c-1b2f3a4c5d6e"
REFERRER_HOSTS = [f"site{n}.example" for n in range(300)] + ["www.google.com", "t.co", "news.ycombinator.com"]
REFERRER_PATHS = ["", "search?q=queues", "r/python/comments/1"]
PAGES = [f"/blog/post-{n}" for n in range(300)] + [
    "/",
    "/pricing",
    "/docs/install?utm_source=newsletter&utm_medium=email&utm_campaign=spring",
    "/?utm_source=twitter&hk_qr=6f9619ff-8b86-d011-b42d-00c04fc964ff",
]
SESSION_SPREAD = 5_000  # a visitor's pageviews fall within this many envelopes of the first
MUNICH_NETWORK = ipaddress.ip_network(geoip_fixtures.MUNICH.network)
LONDON_NETWORK = ipaddress.ip_network(geoip_fixtures.LONDON.network)


def visitor_address(rng: random.Random) -> str:
    draw = rng.random()
    if draw < 0.55:
        network = LONDON_NETWORK
    elif draw < 0.75:
        network = MUNICH_NETWORK
    elif draw < 0.97:
        return f"{rng.randrange(11, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    else:
        return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    offset = rng.randrange(1, network.num_addresses - 1)
    return str(network.network_address + offset)


def visitor_stream(count: int, views_per_visitor: float, rng: random.Random) -> list[str]:
    """``count`` addresses in arrival order. Each visitor arrives at a uniform position and
    sends a geometric number of pageviews over the next ``SESSION_SPREAD`` positions, so the
    share of pageviews from a new address is steady at about 1 / ``views_per_visitor``."""
    more = 1 - 1 / views_per_visitor  # chance of one more pageview
    arrivals: list[tuple[float, str]] = []
    in_range = 0
    while in_range < count:
        address, first = visitor_address(rng), rng.uniform(-SESSION_SPREAD, count)
        views = [first]
        while rng.random() < more:
            views.append(first + rng.uniform(0, SESSION_SPREAD))
        arrivals.extend((position, address) for position in views)
        in_range += sum(0 <= position < count for position in views)
    arrivals.sort()
    return [address for position, address in arrivals if position >= 0][:count]


def envelopes(count: int, views_per_visitor: float) -> list[Envelope]:
    rng = random.Random(3)
    now = int(time.time() * 1000)
    stream = zip(user_agent_stream(count), visitor_stream(count, views_per_visitor, rng), strict=True)
    return [
        Envelope(
            site_id=SITE_ID,
            site_domain="example.com",
            page_id=str(uuid.uuid4()),
            session_id=str(uuid.uuid4()),
            timestamp_ms=now - rng.randrange(86_400_000),
            received_ms=now,
            url=f"https://example.com{rng.choice(PAGES)}",
            visitor_ip=address,
            user_agent=user_agent,
            referrer=None
            if rng.random() < 0.5
            else f"https://{rng.choice(REFERRER_HOSTS)}/{rng.choice(REFERRER_PATHS)}",
            language="en-US",
            screen_width=1920,
            screen_height=1080,
            viewport_width=1280,
            viewport_height=720,
        )
        for user_agent, address in stream
    ]


class Geoip2Lookup:
    """The previous geo step: geoip2 Readers building their model objects, no cache."""

    def __init__(self, city_db: Path, asn_db: Path) -> None:
        self._city = geoip2.database.Reader(str(city_db))
        self._asn = geoip2.database.Reader(str(asn_db))

    def enrich(self, visit: Visit) -> None:
        ip, row = visit.ip, visit.row
        if ip is None or not is_public(ip):
            return
        try:
            city = self._city.city(ip)
        except geoip2.errors.AddressNotFoundError:
            pass
        else:
            row.country = city.country.iso_code or ""
            if city.subdivisions:
                row.region_code = city.subdivisions[0].iso_code or ""
                row.region_name = city.subdivisions[0].name or ""
            row.city = city.city.name or ""
        try:
            network = self._asn.asn(ip)
        except geoip2.errors.AddressNotFoundError:
            pass
        else:
            row.asn = network.autonomous_system_number or 0
            row.provider = network.autonomous_system_organization or ""


@contextlib.contextmanager
def without_caches() -> Iterator[None]:
    """Run the steps' cached helpers uncached (``lru_cache`` keeps the plain function)."""
    cached = [(visit, "parse_ip"), (url, "split_page_url"), (client, "cached_referrer_host")]
    originals = [getattr(module, name) for module, name in cached]
    for module, name in cached:
        setattr(module, name, getattr(module, name).__wrapped__)
    try:
        yield
    finally:
        for (module, name), original in zip(cached, originals, strict=True):
            setattr(module, name, original)


def before_style(settings: Settings) -> Pipeline:
    assert settings.geoip_city_db and settings.geoip_asn_db
    pipeline = build_pipeline(settings)
    old_geo = Geoip2Lookup(settings.geoip_city_db, settings.geoip_asn_db)
    pipeline.steps = tuple(Step(s.name, old_geo.enrich) if s.name == "geo" else s for s in pipeline.steps)
    return pipeline


# Crawler user agents and, per crawler, an address inside its operator's published ranges
# (shared/crawlers/data/ranges.json); None: its operator publishes none (unverifiable).
CRAWLERS: list[tuple[str, str | None]] = [
    ("Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)", "132.196.86.7"),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "192.178.4.9"),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "13.66.139.7"),
    ("Mozilla/5.0 (compatible; ClaudeBot/1.0; +claudebot@anthropic.com)", None),
    ("Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com)", None),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "142.44.220.7"),
    ("curl/8.7.1", None),
    ("python-requests/2.31.0", None),
]


def crawler_envelopes(count: int) -> list[Envelope]:
    """``count`` crawler envelopes: the crawlers in turn, every other one from outside the ranges."""
    rng = random.Random(5)
    base = envelopes(count, 3.0)
    for number, envelope in enumerate(base):
        user_agent, address = CRAWLERS[number % len(CRAWLERS)]
        envelope.user_agent = user_agent
        if address is not None and number % 2 == 0:
            envelope.visitor_ip = address
        else:
            envelope.visitor_ip = visitor_address(rng)
    return base


def without_crawler_step(pipeline: Pipeline) -> tuple[Step, ...]:
    return tuple(step for step in pipeline.steps if step.name != "crawler")


def crawler_step_ab(
    pipeline: Pipeline, workload: str, warmup: Sequence[Envelope], measured: Sequence[Envelope], rounds: int
) -> None:
    """The two sides taking turns on one pipeline object (which goes first alternates); medians
    of CPU µs per event; then the step alone over the same events. Each timed run starts after
    a full collection and keeps no rows, so neither side's garbage is the other's to collect."""
    with_step, without_step = pipeline.steps, without_crawler_step(pipeline)
    costs: dict[str, list[float]] = {"with": [], "without": []}
    for round_number in range(rounds):
        sides = [("with", with_step), ("without", without_step)]
        for side, steps in sides if round_number % 2 == 0 else sides[::-1]:
            pipeline.steps = steps
            for envelope in warmup:
                pipeline.process(envelope)
            gc.collect()
            started = time.process_time()
            for envelope in measured:
                pipeline.process(envelope)
            costs[side].append((time.process_time() - started) * 1e6 / len(measured))
    pipeline.steps = with_step
    hits = sum(
        isinstance(row, CrawlerHitRow)
        for result in map(pipeline.process, measured)
        if isinstance(result, tuple)
        for row in result
    )
    with_us, without_us = statistics.median(costs["with"]), statistics.median(costs["without"])
    print(
        f"{workload:<14} with {with_us:6.2f} µs/event  without {without_us:6.2f}  "
        f"crawler step {with_us - without_us:+6.2f} µs/event ({with_us / without_us:.3f}x)  "
        f"crawler hits {hits / len(measured):.1%} of events"
    )
    print(f"{'':<14} rounds with    {' '.join(f'{value:6.2f}' for value in costs['with'])}")
    print(f"{'':<14} rounds without {' '.join(f'{value:6.2f}' for value in costs['without'])}")
    alone = step_alone(pipeline, measured, rounds)
    print(
        f"{'':<14} the step alone (classification + verification + the hit row): "
        f"{statistics.median(alone):.2f} µs/event (rounds {' '.join(f'{value:.2f}' for value in alone)})"
    )


def step_alone(pipeline: Pipeline, measured: Sequence[Envelope], rounds: int) -> list[float]:
    """CPU µs per event of the crawler step by itself, over visits the steps before it have
    filled in (untimed); its caches are warm from the A/B above."""
    names = [step.name for step in pipeline.steps]
    earlier, crawler = pipeline.steps[: names.index("crawler")], pipeline.steps[names.index("crawler")]
    visits = []
    for envelope in measured:
        visit = Visit.start(envelope)
        if all(step.run(visit) is None for step in earlier):
            visits.append(visit)
    costs = []
    for _ in range(rounds):
        for visit in visits:
            visit.crawler_hit = None
        gc.collect()
        started = time.process_time()
        for visit in visits:
            crawler.run(visit)
        costs.append((time.process_time() - started) * 1e6 / len(visits))
    return costs


def timed(
    pipeline: Pipeline, warmup: Sequence[Envelope], measured: Sequence[Envelope]
) -> tuple[float, float, list[tuple[StoredRow, ...] | Drop]]:
    """CPU-time and wall-time rates over ``measured`` after processing ``warmup`` untimed."""
    for envelope in warmup:
        pipeline.process(envelope)
    cpu, wall = time.process_time(), time.perf_counter()
    results = [pipeline.process(envelope) for envelope in measured]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return len(measured) / cpu, len(measured) / wall, results


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--envelopes", type=int, default=60_000, help="timed envelopes per side")
    arguments.add_argument("--warmup", type=int, default=20_000, help="untimed envelopes first")
    arguments.add_argument("--views-per-visitor", type=float, default=3.0)
    arguments.add_argument("--rounds", type=int, default=5, help="rounds of the crawler step A/B")
    options = arguments.parse_args()

    stream = envelopes(options.warmup + options.envelopes, options.views_per_visitor)
    warmup, measured = stream[: options.warmup], stream[options.warmup :]
    seen: set[str] = {e.visitor_ip for e in warmup if e.visitor_ip}
    new_visitors = 0
    for envelope in measured:
        new_visitors += envelope.visitor_ip not in seen
        seen.add(envelope.visitor_ip or "")
    print(
        f"{len(measured)} timed envelopes after {len(warmup)} untimed; {len(seen)} distinct addresses, "
        f"{new_visitors / len(measured):.0%} of timed envelopes from a new address"
    )

    with tempfile.TemporaryDirectory(prefix="hitstream-pipeline-bench-") as scratch:
        directory = Path(scratch)
        settings = Settings(
            geoip_city_db=geoip_fixtures.build_city_db(directory / "city.mmdb"),
            geoip_asn_db=geoip_fixtures.build_asn_db(directory / "asn.mmdb"),
        )
        with without_caches():
            before_cpu, before_wall, before_rows = timed(before_style(settings), warmup, measured)
        pipeline = build_pipeline(settings)
        cpu, wall, rows = timed(pipeline, warmup, measured)
        if rows != before_rows:
            raise SystemExit("the pipeline's rows differ from the before-style rows")
        print(f"crawler step A/B, {options.rounds} rounds each, taking turns (CPU µs per event, medians):")
        crawler_step_ab(pipeline, "realistic mix", warmup, measured, options.rounds)
        crawlers = crawler_envelopes(options.warmup + options.envelopes)
        crawler_step_ab(
            pipeline, "crawlers only", crawlers[: options.warmup], crawlers[options.warmup :], options.rounds
        )

    print(f"{'side':<9} {'envelopes/s (cpu)':>18} {'(wall)':>9}")
    print(f"{'before':<9} {before_cpu:>18,.0f} {before_wall:>9,.0f}")
    print(f"{'pipeline':<9} {cpu:>18,.0f} {wall:>9,.0f}")
    print(f"ratio: {cpu / before_cpu:.1f}x (cpu)  target: >= 30,000 envelopes/s")
    for name, info in [
        ("address", visit.parse_ip.cache_info()),
        ("url", url.split_page_url.cache_info()),
        ("referrer", client.cached_referrer_host.cache_info()),
    ]:
        print(f"cache {name:<9} hits {info.hits:>7}  misses {info.misses:>7}  size {info.currsize}")


if __name__ == "__main__":
    main()
