"""The ranges document: each operator's published address list, as one JSON file.

``{"snapshot": "2026-09-02", "lists": {"openai-gptbot": {"operator": "OpenAI", "label":
"GPTBot", "url": "https://openai.com/gptbot.json", "fetched_at": "...", "prefixes":
["132.196.86.0/24", ...]}, ...}}``. A crawler names the lists that verify it
(``Crawler.ranges``). The vendored snapshot is ``data/ranges.json``; ``hitstream crawlers
update`` writes a fresher one (hitstream.crawlers_update) where ``HITSTREAM_CRAWLER_RANGES``
points. Both are read and checked here, so a document the workers would refuse is never
swapped in.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.networks import IPNetwork

VENDORED_RANGES = Path(__file__).resolve().parent / "data" / "ranges.json"
# The largest document accepted: the 15 lists of 2026 hold ~3,000 prefixes; Google's alone
# could grow tenfold and stay far below.
MAX_PREFIXES = 200_000


class UnusableRanges(ValueError):
    """A ranges document is malformed; the message says where."""


@dataclass(frozen=True)
class RangeList:
    operator: str
    label: str
    url: str  # the operator's own endpoint
    fetched_at: str  # ISO 8601, when that endpoint was read
    networks: tuple[IPNetwork, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "operator": self.operator,
            "label": self.label,
            "url": self.url,
            "fetched_at": self.fetched_at,
            "prefixes": [str(network) for network in self.networks],
        }


@dataclass(frozen=True)
class Ranges:
    snapshot: str  # the date of the oldest list in it
    lists: dict[str, RangeList]

    @property
    def prefix_count(self) -> int:
        return sum(len(ranges.networks) for ranges in self.lists.values())

    def to_json(self) -> str:
        lists = {key: ranges.to_json() for key, ranges in self.lists.items()}
        return json.dumps({"snapshot": self.snapshot, "lists": lists}, indent=1) + "\n"


def parse_networks(prefixes: object, where: str) -> tuple[IPNetwork, ...]:
    """The networks of a list of prefix strings (host bits allowed, as some operators publish
    them); UnusableRanges naming ``where`` and the first bad one."""
    if not isinstance(prefixes, list) or not prefixes:
        raise UnusableRanges(f"{where}: 'prefixes' is not a non-empty list")
    networks = []
    for prefix in prefixes:
        try:
            networks.append(ipaddress.ip_network(str(prefix), strict=False))
        except ValueError:
            raise UnusableRanges(f"{where}: {prefix!r} is not an IP prefix") from None
    return tuple(networks)


def _range_list(key: str, entry: object) -> RangeList:
    if not isinstance(entry, dict):
        raise UnusableRanges(f"list {key!r} is not an object")
    fields = {name: entry.get(name) for name in ("operator", "label", "url", "fetched_at")}
    missing = [name for name, value in fields.items() if not isinstance(value, str) or not value]
    if missing:
        raise UnusableRanges(f"list {key!r} has no {', '.join(missing)}")
    return RangeList(**fields, networks=parse_networks(entry.get("prefixes"), f"list {key!r}"))  # type: ignore[arg-type]


def parse_ranges(text: str) -> Ranges:
    """A checked ranges document; UnusableRanges saying what is wrong."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise UnusableRanges(f"not JSON ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("lists"), dict) or not document["lists"]:
        raise UnusableRanges("no 'lists' object with at least one list")
    if not isinstance(document.get("snapshot"), str):
        raise UnusableRanges("no 'snapshot' date")
    ranges = Ranges(
        document["snapshot"], {str(key): _range_list(str(key), entry) for key, entry in document["lists"].items()}
    )
    if ranges.prefix_count > MAX_PREFIXES:
        raise UnusableRanges(f"{ranges.prefix_count:,} prefixes, more than the {MAX_PREFIXES:,} accepted")
    return ranges


def load_ranges(path: Path) -> Ranges:
    """The checked document in ``path``; UnusableRanges (naming the file) when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UnusableRanges(f"{path}: {error}") from None
    try:
        return parse_ranges(text)
    except UnusableRanges as error:
        raise UnusableRanges(f"{path}: {error}") from None
