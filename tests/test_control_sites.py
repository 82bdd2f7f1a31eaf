"""Sites in Redis: normalised unique domains, lookup, and removal with everything attached."""

from __future__ import annotations

import fakeredis
import pytest

from shared import keys
from shared.control.changes import ControlError
from shared.control.exclusions import INSTANCE_SCOPE, ExclusionKind, add_exclusion, list_exclusions
from shared.control.grants import Role, grant, grants_of
from shared.control.sites import add_site, get_site, list_sites, remove_site, site_for_domain
from shared.control.tokens import create_token
from tests.control_version import control_version


def test_add_site_stores_the_normalised_domain(fake_redis: fakeredis.FakeRedis) -> None:
    site = add_site(fake_redis, "https://WWW.Bücher.de/")

    assert site.domain == "xn--bcher-kva.de"
    assert fake_redis.hget(keys.SITE_BY_DOMAIN, "xn--bcher-kva.de") == site.id.encode()
    assert get_site(fake_redis, site.id) == site
    assert site_for_domain(fake_redis, "bücher.de:443") == site


def test_adding_an_existing_domain_fails_and_keeps_the_first_site(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    first = add_site(fake_redis, "example.com")

    with pytest.raises(ControlError, match="site example.com already exists"):
        add_site(fake_redis, "WWW.EXAMPLE.COM.")

    assert list_sites(fake_redis) == [first]


def test_invalid_domain_is_rejected_with_its_name(fake_redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(ValueError, match="invalid domain 'exa mple.com'"):
        add_site(fake_redis, "exa mple.com")
    assert list_sites(fake_redis) == []


def test_lookup_is_exact_without_subdomain_matching(fake_redis: fakeredis.FakeRedis) -> None:
    add_site(fake_redis, "example.com")

    assert site_for_domain(fake_redis, "shop.example.com") is None
    assert site_for_domain(fake_redis, "example.org") is None
    assert get_site(fake_redis, "00000000-0000-0000-0000-000000000000") is None


def test_list_sites_is_sorted_by_domain(fake_redis: fakeredis.FakeRedis) -> None:
    for domain in ("zeta.io", "alpha.io", "mid.io"):
        add_site(fake_redis, domain)

    assert [site.domain for site in list_sites(fake_redis)] == ["alpha.io", "mid.io", "zeta.io"]


def test_remove_site_drops_its_grants_and_site_exclusions_only(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    removed = add_site(fake_redis, "example.com")
    kept = add_site(fake_redis, "example.org")
    _, token = create_token(fake_redis, "ci")
    grant(fake_redis, token.id, removed.id, Role.ADMIN)
    grant(fake_redis, token.id, kept.id, Role.OWNER)
    add_exclusion(fake_redis, removed.id, ExclusionKind.PATH, "/admin")
    instance_rule = add_exclusion(fake_redis, INSTANCE_SCOPE, ExclusionKind.PATH, "/admin")
    kept_rule = add_exclusion(fake_redis, kept.id, ExclusionKind.COUNTRY, "de")

    assert remove_site(fake_redis, "www.example.com") == removed

    assert list_sites(fake_redis) == [kept]
    assert site_for_domain(fake_redis, "example.com") is None
    assert get_site(fake_redis, removed.id) is None
    assert grants_of(fake_redis, token.id) == {kept.id: Role.OWNER}
    assert {rule.id for rule in list_exclusions(fake_redis)} == {instance_rule.id, kept_rule.id}


def test_removing_an_unknown_site_fails(fake_redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(ControlError, match="no site example.com"):
        remove_site(fake_redis, "example.com")


def test_every_site_change_moves_the_control_version(fake_redis: fakeredis.FakeRedis) -> None:
    assert control_version(fake_redis) == 0
    add_site(fake_redis, "example.com")
    assert control_version(fake_redis) == 1
    with pytest.raises(ControlError):
        add_site(fake_redis, "example.com")
    assert control_version(fake_redis) == 1  # a refused change is no change
    remove_site(fake_redis, "example.com")
    assert control_version(fake_redis) == 2
