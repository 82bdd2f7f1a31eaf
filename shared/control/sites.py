"""Sites: the domains hitstream accepts pageviews for, each with a stable UUID.

Storage (docs/architecture.md): ``keys.SITE_BY_DOMAIN`` maps normalised domain -> site id,
``keys.SITE`` holds the site's fields. The API finds a site by exact domain match.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from redis import Redis
from redis.client import Pipeline

from shared import keys
from shared.control.changes import (
    ControlError,
    HashFields,
    bump_version,
    now_iso,
    read_hashes,
    text,
    text_hash,
    transaction_value,
)
from shared.control.exclusions import list_exclusions
from shared.hosts import normalise_domain


@dataclass(frozen=True, slots=True)
class Site:
    id: str  # UUID
    domain: str  # normalised (shared.hosts.normalise_domain)
    created_at: str  # ISO 8601, UTC

    def to_hash(self) -> HashFields:
        return {name: value for name, value in asdict(self).items()}

    @classmethod
    def from_hash(cls, values: Mapping[bytes | str, bytes | str]) -> Site:
        fields = text_hash(values)
        return cls(id=fields["id"], domain=fields["domain"], created_at=fields["created_at"])


def add_site(redis: Redis, domain: str) -> Site:
    """Create a site for a domain; ControlError if that domain already has one."""
    site = Site(id=str(uuid.uuid4()), domain=normalise_domain(domain), created_at=now_iso())

    def write(pipe: Pipeline) -> None:
        if pipe.hexists(keys.SITE_BY_DOMAIN, site.domain):
            raise ControlError(f"site {site.domain} already exists")
        pipe.multi()
        pipe.hset(keys.SITE.format(site_id=site.id), mapping=site.to_hash())
        pipe.hset(keys.SITE_BY_DOMAIN, site.domain, site.id)
        bump_version(pipe)

    redis.transaction(write, keys.SITE_BY_DOMAIN)
    return site


def get_site(redis: Redis, site_id: str) -> Site | None:
    values = redis.hgetall(keys.SITE.format(site_id=site_id))
    return Site.from_hash(values) if values else None


def site_for_domain(redis: Redis, domain: str) -> Site | None:
    """The site for a host, URL or domain (normalised first); None when there is none."""
    site_id = redis.hget(keys.SITE_BY_DOMAIN, normalise_domain(domain))
    return get_site(redis, text(site_id)) if site_id is not None else None


def list_sites(redis: Redis) -> list[Site]:
    """Every site, sorted by domain."""
    site_keys = [keys.SITE.format(site_id=text(site_id)) for site_id in redis.hvals(keys.SITE_BY_DOMAIN)]
    sites = [Site.from_hash(values) for values in read_hashes(redis, site_keys)]
    return sorted(sites, key=lambda site: site.domain)


def remove_site(redis: Redis, domain: str) -> Site:
    """Delete a site with every grant on it and its site-scoped exclusions.

    ControlError if the domain has no site.
    """
    name = normalise_domain(domain)

    def write(pipe: Pipeline) -> Site:
        site_id = pipe.hget(keys.SITE_BY_DOMAIN, name)
        if site_id is None:
            raise ControlError(f"no site {name}")
        site = Site.from_hash(pipe.hgetall(keys.SITE.format(site_id=text(site_id))))
        token_ids = [text(token_id) for token_id in pipe.hkeys(keys.TOKEN_HASH_BY_ID)]
        rule_ids = [rule.id for rule in list_exclusions(pipe) if rule.scope == site.id]
        pipe.multi()
        pipe.hdel(keys.SITE_BY_DOMAIN, site.domain)
        pipe.delete(keys.SITE.format(site_id=site.id))
        for token_id in token_ids:
            pipe.hdel(keys.GRANTS.format(token_id=token_id), site.id)
        if rule_ids:
            pipe.hdel(keys.EXCLUSIONS, *rule_ids)
        bump_version(pipe)
        return site

    watched = (keys.SITE_BY_DOMAIN, keys.TOKEN_HASH_BY_ID, keys.EXCLUSIONS)
    return transaction_value(redis, write, *watched)
