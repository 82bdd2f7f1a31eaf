"""Grants: which role a token holds on which site, and what each role may do.

Storage: ``keys.GRANTS`` per token, site id -> role. The ingest endpoint needs
``Permission.SITE_MANAGE_DATA`` on the pageview's site, which only owner and admin hold;
instance-wide roles do not exist here on purpose (they never count for ingest).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from redis import Redis
from redis.client import Pipeline

from shared import keys
from shared.control.changes import ControlError, bump_version, text


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    EDITOR = "editor"
    VIEWER = "viewer"


class Permission(enum.StrEnum):
    SITE_MANAGE_DATA = "site.manage_data"


ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.OWNER: frozenset({Permission.SITE_MANAGE_DATA}),
    Role.ADMIN: frozenset({Permission.SITE_MANAGE_DATA}),
    Role.EDITOR: frozenset(),
    Role.VIEWER: frozenset(),
}


def can(role: Role | None, permission: Permission) -> bool:
    """Whether a role (None: no grant at all) includes a permission."""
    return role is not None and permission in ROLE_PERMISSIONS[role]


def parse_role(value: str) -> Role:
    """A role from its name; ControlError listing the valid roles otherwise."""
    try:
        return Role(value.strip().lower())
    except ValueError:
        choices = ", ".join(Role)
        raise ControlError(f"invalid role {value!r}: must be one of {choices}") from None


def grant(redis: Redis, token_id: str, site_id: str, role: Role | str) -> None:
    """Give a token a role on a site (replacing any earlier role there).

    ControlError if the token or the site does not exist.
    """
    granted = parse_role(role)
    site_key = keys.SITE.format(site_id=site_id)

    def write(pipe: Pipeline) -> None:
        if not pipe.hexists(keys.TOKEN_HASH_BY_ID, token_id):
            raise ControlError(f"no token with id {token_id!r}")
        if not pipe.exists(site_key):
            raise ControlError(f"no site with id {site_id!r}")
        pipe.multi()
        pipe.hset(keys.GRANTS.format(token_id=token_id), site_id, granted.value)
        bump_version(pipe)

    redis.transaction(write, keys.TOKEN_HASH_BY_ID, site_key)


def role_on_site(redis: Redis, token_id: str, site_id: str) -> Role | None:
    role = redis.hget(keys.GRANTS.format(token_id=token_id), site_id)
    return Role(text(role)) if role is not None else None


def grants_of(redis: Redis, token_id: str) -> dict[str, Role]:
    """Every grant of a token: site id -> role."""
    values = redis.hgetall(keys.GRANTS.format(token_id=token_id))
    return {text(site_id): Role(text(role)) for site_id, role in values.items()}
