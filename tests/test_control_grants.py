"""Grants: a token's role per site, and which roles may ingest pageviews."""

from __future__ import annotations

import fakeredis
import pytest

from shared.control.changes import ControlError
from shared.control.grants import Permission, Role, can, grant, grants_of, role_on_site
from shared.control.sites import add_site
from shared.control.tokens import create_token
from tests.control_version import control_version


@pytest.mark.parametrize(
    ("role", "allowed"),
    [(Role.OWNER, True), (Role.ADMIN, True), (Role.EDITOR, False), (Role.VIEWER, False), (None, False)],
)
def test_only_owner_and_admin_may_manage_site_data(role: Role | None, allowed: bool) -> None:
    assert can(role, Permission.SITE_MANAGE_DATA) is allowed


def test_grant_sets_the_role_on_that_site_only(fake_redis: fakeredis.FakeRedis) -> None:
    site = add_site(fake_redis, "example.com")
    other = add_site(fake_redis, "example.org")
    _, token = create_token(fake_redis, "ci")
    version = control_version(fake_redis)

    grant(fake_redis, token.id, site.id, "admin")

    assert role_on_site(fake_redis, token.id, site.id) is Role.ADMIN
    assert role_on_site(fake_redis, token.id, other.id) is None
    assert control_version(fake_redis) == version + 1


def test_a_new_grant_replaces_the_old_role(fake_redis: fakeredis.FakeRedis) -> None:
    site = add_site(fake_redis, "example.com")
    _, token = create_token(fake_redis, "ci")
    grant(fake_redis, token.id, site.id, Role.OWNER)
    grant(fake_redis, token.id, site.id, Role.VIEWER)

    assert grants_of(fake_redis, token.id) == {site.id: Role.VIEWER}


def test_grant_rejects_unknown_role_token_or_site(fake_redis: fakeredis.FakeRedis) -> None:
    site = add_site(fake_redis, "example.com")
    _, token = create_token(fake_redis, "ci")

    with pytest.raises(ControlError, match="invalid role 'boss': must be one of owner, admin"):
        grant(fake_redis, token.id, site.id, "boss")
    with pytest.raises(ControlError, match="no token with id 'missing'"):
        grant(fake_redis, "missing", site.id, Role.ADMIN)
    with pytest.raises(ControlError, match="no site with id 'missing'"):
        grant(fake_redis, token.id, "missing", Role.ADMIN)
    assert grants_of(fake_redis, token.id) == {}
