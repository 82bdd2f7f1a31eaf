"""How well ``shared.crawlers.identity`` names crawlers, measured on corpora it was NOT built
from, and how often it takes a human's browser for a crawler.

Corpora (neither is a source of the identity table, data/README.md):

- Matomo's device-detector test fixtures (github.com/matomo-org/device-detector,
  ``Tests/fixtures/*.yml``, LGPL-3.0, read here, not copied): ``bots.yml`` lists 1,342 bot
  user agents with the bot's name and category (Search bot, Crawler, AI Data Scraper, ...);
  the other files list client user agents with their client type (browser, mobile app,
  library, feed reader, ...);
- ua-parser's uap-core tests (github.com/ua-parser/uap-core, ``tests/test_device.yaml``,
  Apache-2.0): device family ``Spider`` marks a crawler, anything else a device; and its
  ``test_resources/firefox_user_agent_strings.yaml`` and ``opera_mini_user_agent_strings.yaml``,
  people's browsers, held out: the crawler-user-agents patterns the table ignores were found
  on device-detector's browsers and uap-core's devices, never on these.

Export them from a checkout (or ``git show HEAD:<path>`` of a mirror) into two directories:

    python -m bench.crawler_accuracy --device-detector DIR_OF_YML --uap-core DIR_OF_UAP_YAML

Each figure has its same-run baseline: the crawler-user-agents patterns alone, the bot signal
the workers' user-agent step had before (yes or no, no name). Prints: the share of bots
identified (recall), per device-detector category; how often the
name agrees with device-detector's; the AI flag against device-detector's AI categories;
and the share of each client type taken for a crawler (browsers: false positives), with
examples of every miss and false positive class.
"""

from __future__ import annotations

if not __package__:  # run as a script, the bench.* imports below would not resolve
    raise SystemExit("run from the repository root as: python -m bench.crawler_accuracy")

import argparse
import collections
import re
from pathlib import Path
from typing import Any

import crawleruseragents
import ua_parser_rs
import yaml

from bench.ua_mix import browser_user_agents
from shared.crawlers.identity import identify

# The same-run baseline: every crawler-user-agents pattern in one regex set, the bot signal
# the workers' user-agent step already had (workers/pipeline/user_agent.py), yes or no only.
_BASELINE = ua_parser_rs.UserAgentExtractor(
    (entry["pattern"], "crawler", None, None, None, None) for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
)


def baseline(user_agent: str) -> bool:
    return _BASELINE.extract(user_agent) is not None


AI_CATEGORIES = {"AI Data Scraper", "AI Search Crawler", "AI Assistant", "AI Agent"}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(path: Path) -> list[dict[str, Any]]:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER) or []


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _names_agree(ours: str, theirs: str) -> bool:
    a, b = _key(ours), _key(theirs)
    return bool(a) and bool(b) and (a in b or b in a)


def _share(part: int, whole: int) -> str:
    return f"{part:,} / {whole:,} = {100 * part / whole:.1f}%" if whole else "0 / 0"


def bots(directory: Path, examples: int) -> None:
    cases = [case for case in _load(directory / "bots.yml") if isinstance(case.get("bot"), dict)]
    by_category: dict[str, list[bool]] = collections.defaultdict(list)
    missed: list[str] = []
    named = disagreeing = 0
    ai_confusion = collections.Counter[tuple[bool, bool]]()
    disagreements: list[str] = []
    for case in cases:
        crawler = identify(str(case["user_agent"]))
        category = case["bot"].get("category") or "(none)"
        by_category[category].append(crawler is not None)
        if crawler is None:
            missed.append(f"[{category}] {case['user_agent']}")
            continue
        if _names_agree(crawler.name, str(case["bot"].get("name", ""))):
            named += 1
        else:
            disagreeing += 1
            disagreements.append(f"ours {crawler.name!r}, theirs {case['bot'].get('name')!r}: {case['user_agent']}")
        ai_confusion[(category in AI_CATEGORIES, crawler.ai)] += 1
    found = sum(sum(values) for values in by_category.values())
    by_baseline = sum(baseline(str(case["user_agent"])) for case in cases)
    print(
        f"device-detector bots.yml: identified {_share(found, len(cases))}; baseline {_share(by_baseline, len(cases))}"
    )
    for category, values in sorted(by_category.items(), key=lambda item: -len(item[1])):
        print(f"  {category:<22} {_share(sum(values), len(values))}")
    print(f"  name agrees with device-detector's (one contains the other): {_share(named, named + disagreeing)}")
    both, ours_only, theirs_only = ai_confusion[(True, True)], ai_confusion[(False, True)], ai_confusion[(True, False)]
    print(
        f"  AI flag against device-detector's AI categories, among identified bots: both AI {both},"
        f" only ours {ours_only}, only theirs {theirs_only}, neither {ai_confusion[(False, False)]}"
    )
    for title, lines in (("missed", missed), ("named differently", disagreements)):
        print(f"  {title}, first {examples} of {len(lines)}:")
        for line in lines[:examples]:
            print(f"    {line[:160]}")


def clients(directory: Path, examples: int) -> None:
    taken: dict[str, list[str]] = collections.defaultdict(list)
    total, by_baseline = collections.Counter[str](), collections.Counter[str]()
    for path in sorted(directory.glob("*.yml")):
        if path.name == "bots.yml":
            continue
        for case in _load(path):
            client = case.get("client") if isinstance(case, dict) else None
            kind = client.get("type", "(none)") if isinstance(client, dict) else "(none)"
            total[kind] += 1
            by_baseline[kind] += baseline(str(case["user_agent"]))
            crawler = identify(str(case["user_agent"]))
            if crawler is not None:
                taken[kind].append(f"as {crawler.name!r} ({crawler.purpose}): {case['user_agent']}")
    print("device-detector client fixtures taken for a crawler (browsers: false positives):")
    for kind, count in total.most_common():
        print(f"  {kind:<22} {_share(len(taken[kind]), count):<26} baseline {_share(by_baseline[kind], count)}")
    for kind in ("browser", *(k for k in taken if k != "browser")):
        if taken[kind]:
            print(f"  {kind}, first {examples} of {len(taken[kind])}:")
            for line in taken[kind][:examples]:
                print(f"    {line[:160]}")


def uap_core(directory: Path, examples: int) -> None:
    cases = _load(directory / "test_device.yaml")
    if isinstance(cases, dict):
        cases = cases["test_cases"]
    spiders = [str(c["user_agent_string"]) for c in cases if c.get("family") == "Spider"]
    devices = [str(c["user_agent_string"]) for c in cases if c.get("family") != "Spider"]
    missed = [ua for ua in spiders if identify(ua) is None]
    taken = [f"as {identify(ua).name!r}: {ua}" for ua in devices if identify(ua) is not None]  # type: ignore[union-attr]
    spiders_baseline, devices_baseline = sum(map(baseline, spiders)), sum(map(baseline, devices))
    print(
        f"uap-core test_device.yaml: Spider identified {_share(len(spiders) - len(missed), len(spiders))};"
        f" baseline {_share(spiders_baseline, len(spiders))}"
    )
    print(
        f"  other devices taken for a crawler {_share(len(taken), len(devices))};"
        f" baseline {_share(devices_baseline, len(devices))}"
    )
    for title, lines in (("Spider missed", missed), ("devices taken", taken)):
        print(f"  {title}, first {examples} of {len(lines)}:")
        for line in lines[:examples]:
            print(f"    {line[:160]}")


def held_out_people(directory: Path, examples: int) -> None:
    """People's user agents no part of the table was tuned on: uap-core's Firefox and Opera
    Mini strings, and the browsers of bench/ua_mix.py."""
    strings: dict[str, list[str]] = {"bench/ua_mix.py browsers": browser_user_agents()}
    for name in ("firefox_user_agent_strings.yaml", "opera_mini_user_agent_strings.yaml"):
        document = _load(directory / name)
        cases = document["test_cases"] if isinstance(document, dict) else document
        strings[f"uap-core {name}"] = [str(case["user_agent_string"]) for case in cases]
    print("held out (never looked at while building the table): people's user agents taken for a crawler")
    for source, uas in strings.items():
        taken = [f"as {crawler.name!r}: {ua}" for ua in uas if (crawler := identify(ua)) is not None]
        print(f"  {source:<45} {_share(len(taken), len(uas)):<22} baseline {_share(sum(map(baseline, uas)), len(uas))}")
        for line in taken[:examples]:
            print(f"    {line[:160]}")


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--device-detector", type=Path, required=True, help="directory of its Tests/fixtures/*.yml")
    arguments.add_argument("--uap-core", type=Path, required=True, help="directory holding its test_device.yaml")
    arguments.add_argument("--examples", type=int, default=15, help="examples printed per class")
    options = arguments.parse_args()
    bots(options.device_detector, options.examples)
    clients(options.device_detector, options.examples)
    uap_core(options.uap_core, options.examples)
    held_out_people(options.uap_core, options.examples)


if __name__ == "__main__":
    main()
