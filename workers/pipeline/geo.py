"""The geo step: country, region and city from a City database, ASN and provider from an
ASN database (MaxMind or compatible .mmdb files, read with geoip2).

Either database may be absent. Then its fields stay empty and one warning is logged when the
pipeline is built, never per pageview, and the worker keeps running. Addresses that are not
public (private, loopback, link-local) are never looked up.
"""

from __future__ import annotations

import logging
from pathlib import Path

import geoip2.database
import geoip2.errors
import maxminddb

from workers.pipeline.networks import IPAddress
from workers.pipeline.visit import Visit

log = logging.getLogger(__name__)


def _open(
    path: Path | None, required_type: str, setting: str, fields: str
) -> geoip2.database.Reader | None:
    """The reader for ``path``, or None with a warning (never an exception) when unusable."""
    if path is None:
        log.warning("%s is not set: %s stay empty", setting, fields)
        return None
    try:
        reader = geoip2.database.Reader(str(path))
    except (OSError, maxminddb.InvalidDatabaseError) as error:
        log.warning("%s=%s cannot be read (%s): %s stay empty", setting, path, error, fields)
        return None
    database_type = reader.metadata().database_type
    if required_type not in database_type:
        reader.close()
        log.warning(
            "%s=%s is a %r database, not %s: %s stay empty",
            setting, path, database_type, required_type, fields,
        )
        return None
    return reader


def is_public(ip: IPAddress) -> bool:
    return not (ip.is_private or ip.is_loopback or ip.is_link_local)


class GeoLookup:
    def __init__(self, city_db: Path | None, asn_db: Path | None) -> None:
        self._city = _open(
            city_db, "City", "HITSTREAM_GEOIP_CITY_DB", "country, region and city"
        )
        # geoip2's .asn() accepts only databases whose type contains "GeoLite2-ASN".
        self._asn = _open(asn_db, "GeoLite2-ASN", "HITSTREAM_GEOIP_ASN_DB", "ASN and provider")

    def enrich(self, visit: Visit) -> None:
        ip, row = visit.ip, visit.row
        if ip is None or not is_public(ip):
            return
        if self._city is not None:
            try:
                city = self._city.city(ip)
            except geoip2.errors.AddressNotFoundError:
                pass
            else:
                row.country = city.country.iso_code or ""
                if city.subdivisions:
                    region = city.subdivisions[0]  # the largest one, e.g. a state, not a county
                    row.region_code = region.iso_code or ""
                    row.region_name = region.name or ""
                row.city = city.city.name or ""
        if self._asn is not None:
            try:
                network = self._asn.asn(ip)
            except geoip2.errors.AddressNotFoundError:
                pass
            else:
                row.asn = network.autonomous_system_number or 0
                row.provider = network.autonomous_system_organization or ""
