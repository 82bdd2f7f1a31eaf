"""Per-call cost of the crawler library: ``identify()`` on a realistic user-agent mix, and
``verify()`` against 100, 3,052 (the vendored snapshot's count) and 30,000 prefixes, each
beside a same-run baseline.

identify, microseconds per call:
  cold     every distinct string of bench/ua_mix.py once, the cache emptied (the regex set)
  stream   a Zipf-skewed stream as real traffic repeats it (the LRU cache warm as it would be)
  baseline crawler-user-agents' own ``is_crawler`` (Python regexes) on the distinct strings,
           which answers only yes or no

verify, microseconds per call, half the addresses inside a list and half outside, IPv4 and
IPv6 mixed as in the snapshot (70/30), prefix lengths drawn from the snapshot's, the three
sizes taking turns in each round:
  table    the library (one NetworkSet per crawler: merged sorted intervals, binary search),
           and its ratio to the 100-prefix table in the same round
  ipaddress  ``ipaddress.ip_address`` alone, for scale (the library parses with inet_pton)
  linear   the baseline: ``any(address in network for network in prefixes)``

    python -m bench.crawler_bench [--calls 200000] [--rounds 5]
"""

from __future__ import annotations

if not __package__:  # run as a script, the bench.* imports below would not resolve
    raise SystemExit("run from the repository root as: python -m bench.crawler_bench")

import argparse
import collections
import ipaddress
import random
import statistics
import time
from collections.abc import Callable, Sequence

import crawleruseragents

from bench.ua_mix import distinct_user_agents, user_agent_stream
from shared.crawlers.identity import Crawler, Purpose, load_identities
from shared.crawlers.ranges import VENDORED_RANGES, RangeList, Ranges, load_ranges
from shared.crawlers.verification import RangeTable
from shared.networks import IPAddress, IPNetwork

SIZES = (100, 3_052, 30_000)
CRAWLER = Crawler("GPTBot", "OpenAI", Purpose.AI_TRAINING, ai=True, ranges=("bench",))


def per_call_us(call: Callable[[str], object], inputs: Sequence[str]) -> float:
    started = time.perf_counter()
    for value in inputs:
        call(value)
    return (time.perf_counter() - started) / len(inputs) * 1e6


def synthetic_prefixes(count: int, rng: random.Random) -> list[IPNetwork]:
    """``count`` distinct prefixes with the snapshot's mix of families and lengths."""
    real = [network for ranges in load_ranges(VENDORED_RANGES).lists.values() for network in ranges.networks]
    lengths = {4: [n.prefixlen for n in real if n.version == 4], 6: [n.prefixlen for n in real if n.version == 6]}
    found: set[IPNetwork] = set()
    while len(found) < count:
        version = 4 if rng.random() < 0.7 else 6
        length = rng.choice(lengths[version])
        bits = 32 if version == 4 else 128
        address = rng.getrandbits(bits) if version == 4 else (0x2001 << 112) | rng.getrandbits(112)
        found.add(ipaddress.ip_network((address >> (bits - length) << (bits - length), length)))
    return sorted(found, key=lambda network: (network.version, network))


def probes(prefixes: list[IPNetwork], count: int, rng: random.Random) -> list[str]:
    """Half addresses inside a random prefix, half random addresses (almost all outside)."""
    found = []
    for index in range(count):
        network = rng.choice(prefixes)
        if index % 2:
            found.append(str(network.network_address + rng.randrange(network.num_addresses)))
        elif network.version == 4:
            found.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
        else:
            found.append(str(ipaddress.IPv6Address((0x2001 << 112) | rng.getrandbits(112))))
    return found


def bench_identify(stream_length: int, rounds: int) -> None:
    distinct = distinct_user_agents()
    stream = user_agent_stream(stream_length)
    started = time.perf_counter()
    table = load_identities()
    built = time.perf_counter() - started
    automated = sum(1 for ua in distinct if table.identify(ua) is not None)
    print(
        f"identify: table of {len(table.crawlers)} crawlers + {len(crawleruseragents.CRAWLER_USER_AGENTS_DATA)}"
        f" crawler-user-agents patterns built in {built * 1e3:.0f} ms; mix: {len(distinct)} distinct user agents"
        f" ({automated} crawlers or tools), stream of {len(stream):,} ({len(set(stream))} distinct)"
    )
    cold, warm, baseline = [], [], []
    for _ in range(rounds):
        table.identify.cache_clear()
        cold.append(per_call_us(table.identify, distinct))
        table.identify.cache_clear()
        warm.append(per_call_us(table.identify, stream))
        baseline.append(per_call_us(crawleruseragents.is_crawler, distinct))
    print(f"  {'cold (every distinct string once)':<44} {statistics.median(cold):8.2f} µs/call")
    print(f"  {'stream (LRU cache warming as in traffic)':<44} {statistics.median(warm):8.2f} µs/call")
    print(f"  {'baseline: crawleruseragents.is_crawler':<44} {statistics.median(baseline):8.2f} µs/call")
    print(f"  cold is {statistics.median(baseline) / statistics.median(cold):.1f}x faster than the baseline")


def bench_verify(calls: int, rounds: int) -> None:
    rng = random.Random(7)
    cases = []
    for size in SIZES:
        prefixes = synthetic_prefixes(size, rng)
        ranges = Ranges("bench", {"bench": RangeList("bench", "bench", "-", "-", tuple(prefixes))})
        addresses = probes(prefixes, calls, rng)
        started = time.perf_counter()
        table = RangeTable(ranges)
        table.verify(CRAWLER, addresses[0])  # builds the crawler's NetworkSet
        built = time.perf_counter() - started
        linear_inputs = addresses[: max(200, calls * 10 // size)]  # the baseline is slow
        known = {address: ipaddress.ip_address(address) for address in linear_inputs}
        cases.append((size, table, addresses, linear_inputs, known, prefixes, built))
    timed: dict[tuple[int, str], list[float]] = collections.defaultdict(list)
    for _ in range(rounds):  # the sizes take turns, so a change in the machine's load hits them all
        for size, table, addresses, linear_inputs, known, prefixes, _built in cases:

            def library(address: str, table: RangeTable = table) -> object:
                return table.verify(CRAWLER, address)

            def linear(address: str, prefixes: list[IPNetwork] = prefixes, known: dict[str, IPAddress] = known) -> bool:
                ip = known[address]
                return any(ip in network for network in prefixes)

            timed[(size, "table")].append(per_call_us(library, addresses))
            timed[(size, "parse")].append(per_call_us(ipaddress.ip_address, addresses))
            timed[(size, "linear")].append(per_call_us(linear, linear_inputs))
    print(f"verify: {calls:,} calls per size and round, {rounds} interleaved rounds, medians in µs/call")
    print(f"  {'prefixes':>9} {'table':>8} {'x 100s':>7} {'ipaddress':>10} {'linear':>9}   {'table build':>11}")
    smallest = timed[(SIZES[0], "table")]
    for size, *_, built in cases:
        ratio = statistics.median(a / b for a, b in zip(timed[(size, "table")], smallest, strict=True))
        print(
            f"  {size:>9,} {statistics.median(timed[(size, 'table')]):>8.2f} {ratio:>6.2f}x"
            f" {statistics.median(timed[(size, 'parse')]):>10.2f} {statistics.median(timed[(size, 'linear')]):>9.1f}"
            f"   {built * 1e3:>8.1f} ms"
        )
    real = RangeTable(load_ranges(VENDORED_RANGES))
    googlebot = load_identities().crawlers["Googlebot"]
    addresses = ["192.178.4.1", "2001:4860:4801:10::1", "66.249.66.1", "203.0.113.9"] * (calls // 4)
    real.verify(googlebot, addresses[0])
    cost = per_call_us(lambda address: real.verify(googlebot, address), addresses)
    print(f"  the vendored snapshot, Googlebot, 4 addresses: {cost:.2f}")


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--calls", type=int, default=200_000, help="verify calls per size and round")
    arguments.add_argument("--stream", type=int, default=200_000, help="length of identify's Zipf stream")
    arguments.add_argument("--rounds", type=int, default=5)
    options = arguments.parse_args()
    bench_identify(options.stream, options.rounds)
    bench_verify(options.calls, options.rounds)


if __name__ == "__main__":
    main()
