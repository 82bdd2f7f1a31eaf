"""The geo step: country, region and city from a City database, ASN and provider from an
ASN database (MaxMind or compatible .mmdb files).

The files are read with ``maxminddb`` (geoip2's own reader underneath) and only the fields
the row needs are taken from each record: geoip2's model objects cost more than the lookup.
Results are kept per address in a bounded LRU cache, since most visitors send several
pageviews. The cache lives only in this worker process's memory, keyed by the parsed
address: nothing logs, dumps or persists it, and entries fall out as new visitors arrive.

Either database may be absent. Then its fields stay empty and one warning is logged when the
pipeline is built, never per pageview, and the worker keeps running. Addresses that are not
public (private, loopback, link-local) are never looked up.

A database file replaced on disk (``hitstream geoip update`` renames a new one over it, a
``geoipupdate`` cron job does the same) or created after start-up is opened again within
FILE_CHECK_SECONDS (shared.replaced_files), without a restart: every so often the lookup
compares each file's identity with that of the file it opened, and on a change opens the new
file and empties the cache. A new file that cannot be read (e.g. still being copied in place) leaves
the old reader in use until the file changes again.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb

from shared.networks import IPAddress, NetworkSet
from shared.replaced_files import FILE_CHECK_SECONDS, NEVER_READ, FileIdentity, file_identity
from workers.pipeline.visit import Visit

log = logging.getLogger(__name__)

CACHE_SIZE = 32_768
_LOCALE = "en"  # names are stored in English, as geoip2's default locale gave them


@dataclass(frozen=True, slots=True)
class Place:
    country: str = ""  # ISO 3166-1 alpha-2
    region_code: str = ""
    region_name: str = ""
    city: str = ""
    asn: int = 0
    provider: str = ""


_NOWHERE = Place()


def _open(path: Path, required_type: str, setting: str, fields: str) -> maxminddb.Reader | None:
    """The reader for ``path``, or None with a warning (never an exception) when unusable."""
    try:
        reader = maxminddb.open_database(str(path))
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as error:
        log.warning("%s=%s cannot be read (%s): %s stay empty", setting, path, error, fields)
        return None
    database_type = reader.metadata().database_type
    if required_type not in database_type:
        reader.close()
        log.warning(
            "%s=%s is a %r database, not %s: %s stay empty",
            setting,
            path,
            database_type,
            required_type,
            fields,
        )
        return None
    return reader


class _WatchedDatabase:
    """One database setting's reader, opened again when its file is replaced or appears."""

    def __init__(self, path: Path | None, required_type: str, setting: str, fields: str) -> None:
        self.path, self._required_type, self._setting, self._fields = path, required_type, setting, fields
        self.reader: maxminddb.Reader | None = None
        self._opened: FileIdentity | None = NEVER_READ
        if path is None:
            log.warning("%s is not set: %s stay empty", setting, fields)
        else:
            self.reopen_if_replaced()

    def record(self, ip: IPAddress) -> dict[str, Any]:
        """The database's record for ``ip``; empty when it has none (or no file is open)."""
        record = self.reader.get(ip) if self.reader is not None else None
        return record if isinstance(record, dict) else {}

    def reopen_if_replaced(self) -> bool:
        """Open the file again if it is not the one last opened; True when the reader changed."""
        if self.path is None:
            return False
        identity = file_identity(self.path)
        if identity == self._opened:
            return False
        self._opened = identity
        if identity is None:
            if self.reader is None:
                log.warning("%s=%s does not exist (yet): %s stay empty", self._setting, self.path, self._fields)
            return False
        reader = _open(self.path, self._required_type, self._setting, self._fields)
        if reader is None:
            return False
        if self.reader is not None:
            self.reader.close()
            log.info("%s=%s was replaced: opened the new file", self._setting, self.path)
        self.reader = reader
        return True


# Private, loopback and link-local addresses and the other special-purpose ranges Python's
# ``ipaddress`` counts as private (3.11's lists, which include loopback and link-local; an
# IPv4-mapped IPv6 address counts as its IPv4 address). One NetworkSet search replaces
# ``is_private``'s scan of up to 14 networks per address.
_NOT_PUBLIC_V4 = [
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/29",
        "192.0.0.170/31",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
        "255.255.255.255/32",
    )
]
_NOT_PUBLIC_V6 = [
    ipaddress.IPv6Network(network)
    for network in (
        "::1/128",
        "::/128",
        "100::/64",
        "2001::/23",
        "2001:2::/48",
        "2001:db8::/32",
        "2001:10::/28",
        "fc00::/7",
        "fe80::/10",
    )
]
_V4_MAPPED = [ipaddress.IPv6Network(f"::ffff:{n.network_address}/{96 + n.prefixlen}") for n in _NOT_PUBLIC_V4]
_NOT_PUBLIC = NetworkSet([*_NOT_PUBLIC_V4, *_NOT_PUBLIC_V6, *_V4_MAPPED])


def is_public(ip: IPAddress) -> bool:
    return ip not in _NOT_PUBLIC


def _name(record: dict[str, Any]) -> str:
    return record.get("names", {}).get(_LOCALE) or ""


class GeoLookup:
    def __init__(
        self,
        city_db: Path | None,
        asn_db: Path | None,
        cache_size: int = CACHE_SIZE,
        file_check_seconds: float | None = None,
    ) -> None:
        self._city = _WatchedDatabase(city_db, "City", "HITSTREAM_GEOIP_CITY_DB", "country, region and city")
        self._asn = _WatchedDatabase(asn_db, "ASN", "HITSTREAM_GEOIP_ASN_DB", "ASN and provider")
        self._file_check_seconds = FILE_CHECK_SECONDS if file_check_seconds is None else file_check_seconds
        self._next_file_check = time.monotonic() + self._file_check_seconds
        self.locate = functools.lru_cache(maxsize=cache_size)(self._locate)

    def _reopen_replaced_files(self) -> None:
        self._next_file_check = time.monotonic() + self._file_check_seconds
        # Both files are checked (no short-circuit); answers from an old file leave the cache.
        if any([self._city.reopen_if_replaced(), self._asn.reopen_if_replaced()]):
            self.locate.cache_clear()

    def _locate(self, ip: IPAddress) -> Place:
        if not is_public(ip):
            return _NOWHERE
        country = region_code = region_name = city = provider = ""
        asn = 0
        if record := self._city.record(ip):
            country = record.get("country", {}).get("iso_code") or ""
            if subdivisions := record.get("subdivisions"):
                region = subdivisions[0]  # the largest one, e.g. a state, not a county
                region_code, region_name = region.get("iso_code") or "", _name(region)
            city = _name(record.get("city", {}))
        if record := self._asn.record(ip):
            asn = record.get("autonomous_system_number") or 0
            provider = record.get("autonomous_system_organization") or ""
        return Place(country, region_code, region_name, city, asn, provider)

    def enrich(self, visit: Visit) -> None:
        if time.monotonic() >= self._next_file_check:
            self._reopen_replaced_files()
        if visit.ip is None:
            return
        place, row = self.locate(visit.ip), visit.row
        row.country = place.country
        row.region_code = place.region_code
        row.region_name = place.region_name
        row.city = place.city
        row.asn = place.asn
        row.provider = place.provider
