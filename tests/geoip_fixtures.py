"""Small GeoIP test databases built with mmdb-writer, and the test IPs they answer for.

Other test modules import this: ``build_city_db(path)`` and ``build_asn_db(path)`` write
.mmdb files read as a City and an ASN database (``database_type`` set accordingly). The data
is invented; records have the shape of GeoLite2's (names in several languages, continent,
location, ...) so a benchmark decodes as much per lookup as with the real databases. Only the
networks below resolve.

=================  ==========================================================================
``LONDON_IPV4``    81.2.69.160  -> GB / ENG England / London,   AS20712 Andrews & Arnold Ltd
                   (the whole of ``LONDON.network``, 81.0.0.0/11, answers the same)
``MUNICH_IPV6``    2a02:d6c0::1 -> DE / BY Bavaria / Munich,     AS3320 Deutsche Telekom AG
                   (the whole of ``MUNICH.network``, 2a02:d6c0::/29)
``PRIVATE_IPV4``   10.1.2.3     -> present in both databases (US / CA / Test City, AS64512),
                   so a pipeline that looked private addresses up would get data; it must not
``PRIVATE_IPV6``   fd00::1      -> likewise (unique-local, present in both databases)
``UNKNOWN_IPV4``   1.1.1.1      -> a public address in neither database
=================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

LONDON_IPV4 = "81.2.69.160"
MUNICH_IPV6 = "2a02:d6c0::1"
PRIVATE_IPV4 = "10.1.2.3"
PRIVATE_IPV6 = "fd00::1"
UNKNOWN_IPV4 = "1.1.1.1"


@dataclass(frozen=True)
class Place:
    network: str
    country: str
    region_code: str
    region_name: str
    city: str
    asn: int
    provider: str


LONDON = Place("81.0.0.0/11", "GB", "ENG", "England", "London", 20712, "Andrews & Arnold Ltd")
MUNICH = Place("2a02:d6c0::/29", "DE", "BY", "Bavaria", "Munich", 3320, "Deutsche Telekom AG")
_PRIVATE = [
    Place("10.0.0.0/8", "US", "CA", "California", "Test City", 64512, "Private Test Net"),
    Place("fd00::/8", "US", "CA", "California", "Test City", 64512, "Private Test Net"),
]
PLACES = {LONDON_IPV4: LONDON, MUNICH_IPV6: MUNICH}


_LANGUAGES = ["de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN"]


def _names(name: str) -> dict[str, str]:
    return {language: name for language in _LANGUAGES}


def _city_record(place: Place) -> dict[str, object]:
    """A GeoLite2-City-shaped record; the pipeline reads only country, subdivision and city."""
    country = {"geoname_id": 2635167, "iso_code": place.country, "names": _names(place.country)}
    return {
        "city": {"geoname_id": 2643743, "names": _names(place.city)},
        "continent": {"code": "EU", "geoname_id": 6255148, "names": _names("Europe")},
        "country": country,
        "location": {"accuracy_radius": 20, "latitude": 51.5142, "longitude": -0.0931, "time_zone": "Europe/London"},
        "postal": {"code": "EC2V"},
        "registered_country": country,
        "subdivisions": [{"geoname_id": 6269131, "iso_code": place.region_code, "names": _names(place.region_name)}],
    }


def _writer(database_type: str) -> MMDBWriter:
    # An IPv6 tree with IPv4 mapped into ::/96, the layout MaxMind's own databases use.
    return MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=_LANGUAGES,
        description="hitstream test data",
    )


def build_city_db(path: Path, places: list[Place] | None = None, database_type: str = "GeoLite2-City") -> Path:
    """Write a City database (type ``GeoLite2-City``) to ``path`` and return ``path``;
    ``places`` replaces LONDON and MUNICH (a database whose answers changed)."""
    writer = _writer(database_type)
    for place in [*(places or [LONDON, MUNICH]), *_PRIVATE]:
        writer.insert_network(
            IPSet([place.network]),
            _city_record(place),
        )
    writer.to_db_file(str(path))
    return path


def build_asn_db(path: Path) -> Path:
    """Write an ASN database (type ``GeoLite2-ASN``) to ``path`` and return ``path``."""
    writer = _writer("GeoLite2-ASN")
    for place in [LONDON, MUNICH, *_PRIVATE]:
        writer.insert_network(
            IPSet([place.network]),
            {"autonomous_system_number": place.asn, "autonomous_system_organization": place.provider},
        )
    writer.to_db_file(str(path))
    return path
