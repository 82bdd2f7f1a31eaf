"""Exclusion rules: values normalised once at creation, stored as JSON in one hash."""

from __future__ import annotations

import fakeredis
import orjson
import pytest

from shared import keys
from shared.control.changes import ControlError
from shared.control.exclusions import (
    INSTANCE_SCOPE,
    ExclusionKind,
    ExclusionRule,
    add_exclusion,
    list_exclusions,
    remove_exclusion,
)
from shared.control.sites import add_site
from tests.control_version import control_version


@pytest.mark.parametrize(
    ("kind", "given", "stored"),
    [
        (ExclusionKind.CIDR, "10.1.2.3/8", "10.0.0.0/8"),
        (ExclusionKind.CIDR, "192.0.2.7", "192.0.2.7/32"),
        (ExclusionKind.CIDR, "2001:DB8:0::/32", "2001:db8::/32"),
        (ExclusionKind.CIDR, "::ffff:192.168.0.0/112", "192.168.0.0/16"),
        (ExclusionKind.COUNTRY, " de ", "DE"),
        (ExclusionKind.USER_AGENT, "HeadlessChrome", "HeadlessChrome"),
        (ExclusionKind.PATH, "/blog/", "/blog"),
        (ExclusionKind.PATH, "//blog//drafts/../x", "/blog/x"),
        (ExclusionKind.PATH, "/", "/"),
    ],
)
def test_values_are_normalised(fake_redis: fakeredis.FakeRedis, kind: ExclusionKind, given: str, stored: str) -> None:
    rule = add_exclusion(fake_redis, INSTANCE_SCOPE, kind, given)

    assert rule.value == stored
    assert list_exclusions(fake_redis) == [rule]


@pytest.mark.parametrize(
    ("kind", "given", "message"),
    [
        (ExclusionKind.CIDR, "10.0.0.0/33", "invalid cidr exclusion '10.0.0.0/33'"),
        (ExclusionKind.COUNTRY, "DEU", "invalid country exclusion 'DEU': must be an ISO"),
        (ExclusionKind.COUNTRY, "D1", "invalid country exclusion"),
        (ExclusionKind.USER_AGENT, "  ", "invalid user_agent exclusion"),
        (ExclusionKind.PATH, "blog", "invalid path exclusion 'blog': must start with '/'"),
        (ExclusionKind.PATH, "/a?b=1", "without query"),
    ],
)
def test_invalid_values_are_rejected(
    fake_redis: fakeredis.FakeRedis, kind: ExclusionKind, given: str, message: str
) -> None:
    with pytest.raises(ControlError, match=message.replace("?", r"\?")):
        add_exclusion(fake_redis, INSTANCE_SCOPE, kind, given)
    assert list_exclusions(fake_redis) == []


def test_stored_json_has_the_documented_shape(fake_redis: fakeredis.FakeRedis) -> None:
    site = add_site(fake_redis, "example.com")
    rule = add_exclusion(fake_redis, site.id, ExclusionKind.COUNTRY, "fr")

    stored = fake_redis.hget(keys.EXCLUSIONS, rule.id)
    assert stored is not None
    assert ExclusionRule.from_json(stored) == rule
    assert ExclusionRule.from_json(stored).kind is ExclusionKind.COUNTRY
    assert set(orjson.loads(stored)) == {"id", "scope", "kind", "value", "created_at"}


def test_site_scope_must_be_an_existing_site(fake_redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(ControlError, match="no site with id 'nope'"):
        add_exclusion(fake_redis, "nope", ExclusionKind.COUNTRY, "DE")


def test_identical_rule_is_refused_but_other_scope_is_not(fake_redis: fakeredis.FakeRedis) -> None:
    site = add_site(fake_redis, "example.com")
    first = add_exclusion(fake_redis, INSTANCE_SCOPE, ExclusionKind.CIDR, "10.0.0.0/8")

    with pytest.raises(ControlError, match=f"already exists: {first.id}"):
        add_exclusion(fake_redis, INSTANCE_SCOPE, ExclusionKind.CIDR, "10.9.9.9/8")
    add_exclusion(fake_redis, site.id, ExclusionKind.CIDR, "10.0.0.0/8")

    assert len(list_exclusions(fake_redis)) == 2


def test_remove_exclusion(fake_redis: fakeredis.FakeRedis) -> None:
    rule = add_exclusion(fake_redis, INSTANCE_SCOPE, ExclusionKind.USER_AGENT, "curl")
    version = control_version(fake_redis)

    assert remove_exclusion(fake_redis, rule.id) is True
    assert control_version(fake_redis) == version + 1
    assert list_exclusions(fake_redis) == []
    assert remove_exclusion(fake_redis, rule.id) is False
