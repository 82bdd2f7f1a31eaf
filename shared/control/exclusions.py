"""Exclusion rules: pageviews the workers drop before storing (the API still answers 202).

A rule has a scope (the whole instance, or one site by id), a kind and a value normalised
here once, so the worker pipeline only compares. Matching is the pipeline's job: CIDR
contains the visitor IP, country equals, user agent is a case-insensitive substring, path is
a prefix on segment boundaries (``/blog`` matches ``/blog`` and ``/blog/x``, not ``/blogger``).
Storage: hash ``keys.EXCLUSIONS``, rule id -> rule JSON (docs/architecture.md).
"""

from __future__ import annotations

import enum
import ipaddress
import posixpath
import re
import uuid
from dataclasses import asdict, dataclass

import orjson
from redis import Redis
from redis.client import Pipeline

from shared import keys
from shared.control.changes import ControlError, bump_version, now_iso, text

INSTANCE_SCOPE = "instance"

_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_COUNTRY_CODE = re.compile(r"[A-Z]{2}")


class ExclusionKind(enum.StrEnum):
    CIDR = "cidr"
    COUNTRY = "country"
    USER_AGENT = "user_agent"
    PATH = "path"


@dataclass(frozen=True, slots=True)
class ExclusionRule:
    id: str
    scope: str  # INSTANCE_SCOPE or a site id
    kind: ExclusionKind
    value: str  # normalised by normalise_exclusion_value
    created_at: str  # ISO 8601, UTC

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> ExclusionRule:
        values = orjson.loads(data)
        return cls(
            id=values["id"],
            scope=values["scope"],
            kind=ExclusionKind(values["kind"]),
            value=values["value"],
            created_at=values["created_at"],
        )


def normalise_exclusion_value(kind: ExclusionKind, value: str) -> str:
    """The stored form of a rule value; ControlError naming the kind when it is invalid."""
    try:
        return _NORMALISERS[kind](value)
    except ValueError as error:
        raise ControlError(f"invalid {kind} exclusion {value!r}: {error}") from None


def add_exclusion(redis: Redis, scope: str, kind: ExclusionKind, value: str) -> ExclusionRule:
    """Store a new rule; ControlError for an unknown site scope or an identical existing rule."""
    rule = ExclusionRule(
        id=str(uuid.uuid4()),
        scope=scope,
        kind=ExclusionKind(kind),
        value=normalise_exclusion_value(kind, value),
        created_at=now_iso(),
    )

    site_keys = [] if scope == INSTANCE_SCOPE else [keys.SITE.format(site_id=scope)]

    def write(pipe: Pipeline) -> None:
        if site_keys and not pipe.exists(*site_keys):
            raise ControlError(f"no site with id {scope!r}")
        for existing in _parse_rules(pipe.hvals(keys.EXCLUSIONS)):
            if (existing.scope, existing.kind, existing.value) == (scope, rule.kind, rule.value):
                raise ControlError(f"the same exclusion already exists: {existing.id}")
        pipe.multi()
        pipe.hset(keys.EXCLUSIONS, rule.id, rule.to_json())
        bump_version(pipe)

    redis.transaction(write, keys.EXCLUSIONS, *site_keys)
    return rule


def list_exclusions(redis: Redis) -> list[ExclusionRule]:
    """Every rule, sorted by creation time."""
    return _parse_rules(redis.hvals(keys.EXCLUSIONS))


def remove_exclusion(redis: Redis, rule_id: str) -> bool:
    """Delete a rule; False when there is no rule with that id."""
    with redis.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.EXCLUSIONS, rule_id)
        bump_version(pipe)
        removed, _ = pipe.execute()
    return bool(removed)


def _parse_rules(values: list[bytes | str]) -> list[ExclusionRule]:
    rules = [ExclusionRule.from_json(text(value)) for value in values]
    return sorted(rules, key=lambda rule: (rule.created_at, rule.id))


def _cidr(value: str) -> str:
    network = ipaddress.ip_network(value.strip(), strict=False)
    # Visitor IPs reach the pipeline unmapped (::ffff:1.2.3.4 -> 1.2.3.4), so a rule written
    # in IPv4-mapped form is stored as the IPv4 network it means, or it could never match.
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network.compressed


def _country(value: str) -> str:
    code = value.strip().upper()
    if not _COUNTRY_CODE.fullmatch(code):
        raise ValueError("must be an ISO 3166-1 alpha-2 code such as DE or US")
    return code


def _user_agent(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _path(value: str) -> str:
    path = value.strip()
    if not path.startswith("/"):
        raise ValueError("must start with '/'")
    if "?" in path or "#" in path:
        raise ValueError("must be a path without query or fragment")
    # Collapse repeated slashes first: normpath keeps a leading '//' (POSIX allows it).
    return posixpath.normpath(re.sub(r"/{2,}", "/", path))


_NORMALISERS = {
    ExclusionKind.CIDR: _cidr,
    ExclusionKind.COUNTRY: _country,
    ExclusionKind.USER_AGENT: _user_agent,
    ExclusionKind.PATH: _path,
}
