"""Fetch each crawler operator's published address list from its own endpoint, check it, and
swap the new ranges document in atomically.

Which lists, and where each comes from, is the ranges document already in place (the file in
the target directory, else the vendored snapshot, shared/crawlers/data/ranges.json): every
list names its operator's endpoint (``url``). Each is downloaded with hitstream.download's
bounds (``MAX_LIST_BYTES``, a deadline for the whole download however slowly the server
sends), then read: JSON in any of the operators' shapes (Google's ``{"prefixes":
[{"ipv4Prefix": ...}]}``, and the others' variants: every string that is an IP prefix
counts) or plain text, one prefix per line. A list that fails in any way (an error status,
too large, too slow, truncated, not JSON and not a prefix list, no prefix in it) keeps its
previous prefixes and date, and the failure is named; the new document is checked whole
(shared.crawlers.ranges.parse_ranges, what the workers will read), written beside the old
one, fsynced and renamed over it (``os.replace``: readers see the old file or the new one).
When no list could be fetched nothing is written.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hitstream.download import DownloadFailed, download
from shared.crawlers.ranges import VENDORED_RANGES, RangeList, Ranges, UnusableRanges, load_ranges, parse_ranges
from shared.networks import IPNetwork

RANGES_NAME = "crawler-ranges.json"
# The largest list accepted: the largest of 2026 (Google's user-triggered fetchers, 1,058
# prefixes) is tens of KB.
MAX_LIST_BYTES = 8 * 1024 * 1024
# How long one list's download may take in all.
DOWNLOAD_DEADLINE_SECONDS = 60.0


@dataclass
class Update:
    path: Path  # the document now in place
    ranges: Ranges
    refreshed: list[str] = field(default_factory=list)  # lists fetched anew
    failed: dict[str, str] = field(default_factory=dict)  # list -> why its old prefixes stayed


def _prefix_strings(value: object) -> list[str]:
    """Every string in a JSON value that is an IP prefix or address."""
    if isinstance(value, dict):
        return [found for item in value.values() for found in _prefix_strings(item)]
    if isinstance(value, list):
        return [found for item in value for found in _prefix_strings(item)]
    if isinstance(value, str) and ("." in value or ":" in value):
        try:
            ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            return []
        return [value.strip()]
    return []


def read_operator_list(body: bytes) -> tuple[IPNetwork, ...]:
    """The networks of one operator's published list; UnusableRanges saying why not."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise UnusableRanges("not UTF-8 text") from None
    try:
        document = json.loads(text)
    except ValueError:
        lines = [line.split("#")[0].strip() for line in text.splitlines()]
        prefixes = [line for line in lines if line]
        if not prefixes:
            raise UnusableRanges("empty") from None
        try:
            return tuple(ipaddress.ip_network(prefix, strict=False) for prefix in prefixes)
        except ValueError as error:
            raise UnusableRanges(f"neither JSON nor a list of prefixes ({error})") from None
    prefixes = _prefix_strings(document)
    if not prefixes:
        raise UnusableRanges("JSON without any IP prefix")
    return tuple(dict.fromkeys(ipaddress.ip_network(prefix, strict=False) for prefix in prefixes))


def fetch_list(old: RangeList, staging: Path, deadline_seconds: float, max_bytes: int) -> RangeList:
    """``old``'s list fetched anew from its endpoint; UnusableRanges naming the failure."""
    try:
        download(old.url, staging, max_bytes, deadline_seconds)
        networks = read_operator_list(staging.read_bytes())
    except (DownloadFailed, UnusableRanges) as error:
        raise UnusableRanges(f"{old.url}: {error}") from None
    fetched_at = datetime.now(UTC).isoformat(timespec="seconds")
    return RangeList(old.operator, old.label, old.url, fetched_at, networks)


def current_ranges(target: Path) -> Ranges:
    """The document in place, else the vendored snapshot (one in place that cannot be read
    is replaced from the snapshot's list of endpoints)."""
    try:
        return load_ranges(target)
    except UnusableRanges:
        return load_ranges(VENDORED_RANGES)


def _install(ranges: Ranges, target: Path) -> None:
    text = ranges.to_json()
    parse_ranges(text)  # what a worker will read: checked before it is in place
    descriptor, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    staged = Path(name)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())  # on disk before the rename makes it the document
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)


def update_ranges(
    directory: Path,
    deadline_seconds: float = DOWNLOAD_DEADLINE_SECONDS,
    max_bytes: int = MAX_LIST_BYTES,
) -> Update:
    """Fetch every list of the document in ``directory`` (or of the vendored snapshot) and
    install the result there. UnusableRanges naming every failure when no list could be
    fetched (the file in place, if any, stays as it was)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / RANGES_NAME
    old = current_ranges(target)
    lists: dict[str, RangeList] = {}
    update = Update(target, old)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".crawler-lists.") as staging:
        for key, previous in old.lists.items():
            try:
                lists[key] = fetch_list(previous, Path(staging) / "list", deadline_seconds, max_bytes)
                update.refreshed.append(key)
            except UnusableRanges as error:
                lists[key] = previous
                update.failed[key] = str(error)
    if not update.refreshed:
        raise UnusableRanges("; ".join(f"{key}: {why}" for key, why in update.failed.items()))
    snapshot = min(ranges.fetched_at for ranges in lists.values())[:10]
    update.ranges = Ranges(snapshot, lists)
    _install(update.ranges, target)
    return update
