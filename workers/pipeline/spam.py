"""The spam step: visitors from Spamhaus DROP networks and referrers on the referrer-spam list.

The DROP list is optional (``HITSTREAM_SPAMHAUS_DROP_FILE``) and may be in either format
Spamhaus publishes: text (``1.2.3.0/24 ; SBL123``, comments start with ``;``) or JSON lines
(``{"cidr": "1.2.3.0/24", "sblid": ...}``; the trailing metadata object has no ``cidr``).
The referrer-spam list ships as package data (workers/data/referrer-spammers.txt, see
workers/data/README.md) unless ``HITSTREAM_REFERRER_SPAM_FILE`` names a replacement. A referrer
on the site's own domain or one of its subdomains is never spam.
"""

from __future__ import annotations

import ipaddress
from importlib import resources
from pathlib import Path

import orjson

from shared.hosts import normalise_domain
from shared.networks import IPNetwork, NetworkSet
from workers.pipeline.visit import Visit
from workers.records import DropReason


class SpamListError(ValueError):
    """A spam list file has a line hitstream cannot read; the message names file and line."""


def _drop_network(line: str) -> IPNetwork | None:
    if line.startswith("{"):
        cidr = orjson.loads(line).get("cidr")
        return ipaddress.ip_network(cidr, strict=False) if cidr else None
    entry = line.split(";", 1)[0].strip()
    return ipaddress.ip_network(entry, strict=False) if entry else None


def load_drop_networks(path: Path) -> NetworkSet:
    """The networks of a Spamhaus DROP file (text or JSON lines, IPv4 and IPv6)."""
    networks: list[IPNetwork] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            network = _drop_network(line.strip())
        except (ValueError, TypeError, AttributeError) as error:
            raise SpamListError(f"{path}:{number}: not a DROP entry ({error})") from None
        if network is not None:
            networks.append(network)
    return NetworkSet(networks)


def load_spam_hosts(path: Path | None) -> frozenset[str]:
    """Referrer-spam hosts, one per line (``#`` comments), from ``path`` or the bundled list."""
    if path is None:
        text = resources.files("workers").joinpath("data/referrer-spammers.txt").read_text()
        source = "bundled referrer-spammers.txt"
    else:
        text = path.read_text()
        source = str(path)
    hosts: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            hosts.add(normalise_domain(entry))
        except ValueError as error:
            raise SpamListError(f"{source}:{number}: {error}") from None
    return frozenset(hosts)


def is_same_site(host: str, site_domain: str) -> bool:
    return host == site_domain or host.endswith("." + site_domain)


class SpamFilter:
    def __init__(self, drop_networks: NetworkSet, spam_hosts: frozenset[str]) -> None:
        self._drop_networks = drop_networks
        self._spam_hosts = spam_hosts

    def check(self, visit: Visit) -> DropReason | None:
        if visit.ip is not None and self._drop_networks and visit.ip in self._drop_networks:
            return DropReason.SPAMHAUS_DROP
        host = visit.row.referrer_host
        if host in self._spam_hosts and not is_same_site(host, visit.envelope.site_domain):
            return DropReason.SPAM_REFERRER
        return None
