"""User-agent parses per second: ``user-agents``' own path (the baseline) against the
pipeline's parser (ua-parser 1.x native resolver + LRU cache), same run.

Two workloads, each timed for both parsers:
  cold    every distinct string once (no cache can help)
  stream  a Zipf-skewed stream as real traffic repeats it (caches warm up as they would)

Both sides derive the same fields (browser, OS, device type, bot flag).

    python -m bench.ua_bench [--stream 20000]
"""

from __future__ import annotations

if not __package__:  # run as a script, the bench.* imports below would not resolve
    raise SystemExit("run from the repository root as: python -m bench.ua_bench")

import argparse
import time
from collections.abc import Callable, Sequence

import user_agents

from bench.ua_mix import distinct_user_agents, user_agent_stream
from workers.pipeline.user_agent import UserAgentParser


def baseline_parse(string: str) -> tuple[str, str, bool, bool, bool, bool]:
    agent = user_agents.parse(string)
    return agent.browser.family, agent.os.family, agent.is_tablet, agent.is_mobile, agent.is_pc, agent.is_bot


def parses_per_second(parse: Callable[[str], object], strings: Sequence[str]) -> float:
    started = time.perf_counter()
    for string in strings:
        parse(string)
    return len(strings) / (time.perf_counter() - started)


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--stream", type=int, default=20_000, help="length of the Zipf stream")
    options = arguments.parse_args()

    distinct = distinct_user_agents()
    stream = user_agent_stream(options.stream)
    print(f"{len(distinct)} distinct user agents; stream of {len(stream)} with {len(set(stream))} distinct")

    ours = UserAgentParser()
    ours.parse("warm-up: compiles the regexes before timing")
    ours.parse.cache_clear()
    results = {
        "cold": (parses_per_second(baseline_parse, distinct), parses_per_second(ours.parse, distinct)),
    }
    ours.parse.cache_clear()
    results["stream"] = (parses_per_second(baseline_parse, stream), parses_per_second(ours.parse, stream))

    print(f"{'workload':<8} {'user-agents /s':>15} {'pipeline /s':>13} {'ratio':>7}")
    for workload, (baseline, pipeline) in results.items():
        print(f"{workload:<8} {baseline:>15,.0f} {pipeline:>13,.0f} {pipeline / baseline:>6.1f}x")
    info = ours.parse.cache_info()
    print(f"pipeline cache after the stream: {info.hits} hits, {info.misses} misses, size {info.currsize}")


if __name__ == "__main__":
    main()
