"""``hitstream sites | tokens | exclusions``: the operator's control-plane commands.

Every command talks to the Redis named by HITSTREAM_REDIS_URL. Failures print one line on
stderr and exit non-zero, never a traceback. Token secrets are printed once, by
``tokens create``, alone on the last line so scripts can take it with ``tail -n 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click
import redis
from redis import Redis

from hitstream.arguments import DOMAIN, ArgumentError
from shared.config import load_settings
from shared.control.changes import ControlError
from shared.control.exclusions import (
    INSTANCE_SCOPE,
    ExclusionKind,
    add_exclusion,
    list_exclusions,
    normalise_exclusion_value,
    remove_exclusion,
)
from shared.control.grants import Role, grant, grants_of
from shared.control.sites import (
    Site,
    add_site,
    list_sites,
    remove_site,
    site_for_domain,
)
from shared.control.tokens import MAX_EXPIRES_IN_DAYS, ApiToken, create_token, list_tokens, revoke_token
from shared.hosts import normalise_domain
from shared.lanes import Lane
from shared.redis_client import COMMAND_SECONDS, redis_client, unanswered
from shared.redis_safety import check_redis


class ControlGroup(click.Group):
    """Gives sub-commands a Redis client and turns their failures into one-line errors."""

    def invoke(self, ctx: click.Context) -> Any:
        redis_url = ""
        try:
            settings = load_settings()
            redis_url = settings.redis_url
            client = redis_client(redis_url, timeout_seconds=COMMAND_SECONDS)
            ctx.call_on_close(client.close)
            check_redis(client, settings)  # a token on an evicting Redis may vanish (401)
            ctx.obj = client
            return super().invoke(ctx)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise click.ClickException(unanswered(redis_url, error)) from None
        except redis.RedisError as error:
            raise click.ClickException(f"Redis error: {error}") from None
        except ValueError as error:  # ControlError, ConfigError, an invalid domain
            raise click.ClickException(str(error)) from None


# --- sites --------------------------------------------------------------------------------


@click.group(cls=ControlGroup)
def sites() -> None:
    """Sites: the domains pageviews are accepted for."""


@sites.command("add")
@click.argument("domain", type=DOMAIN)
@click.pass_obj
def sites_add(client: Redis, domain: str) -> None:
    """Add a site for DOMAIN (a URL works too; www. and port are dropped)."""
    site = add_site(client, domain)
    click.echo(f"Added site {site.domain} (id {site.id}).")


@sites.command("list")
@click.pass_obj
def sites_list(client: Redis) -> None:
    """List every site."""
    rows = [(site.domain, site.id, site.created_at) for site in list_sites(client)]
    _echo_table(("DOMAIN", "ID", "CREATED"), rows, empty="No sites.")


@sites.command("remove")
@click.argument("domain", type=DOMAIN)
@click.pass_obj
def sites_remove(client: Redis, domain: str) -> None:
    """Remove the site for DOMAIN with its grants and site exclusions (stored pageviews stay)."""
    site = remove_site(client, domain)
    click.echo(f"Removed site {site.domain} (id {site.id}).")


# --- tokens -------------------------------------------------------------------------------


@click.group(cls=ControlGroup)
def tokens() -> None:
    """API tokens for the ingest endpoint (stored only as SHA-256 hashes)."""


@tokens.command("create")
@click.option("--site", "domain", type=DOMAIN, required=True, help="Domain of the site to grant the role on.")
@click.option(
    "--role",
    type=click.Choice([role.value for role in Role]),
    required=True,
    help="owner and admin may ingest pageviews; editor and viewer may not.",
)
@click.option("--name", default=None, help="A label for operators (default: '<role> on <domain>').")
@click.option(
    "--expires-in",
    "expires_in_days",
    type=click.IntRange(1, MAX_EXPIRES_IN_DAYS),
    default=None,
    metavar="DAYS",
    help="Expire after DAYS days (default: never).",
)
@click.option("--bulk", is_flag=True, help="For replays: its pageviews always go to the bulk lane, never the live one.")
@click.pass_obj
def tokens_create(
    client: Redis, domain: str, role: str, name: str | None, expires_in_days: int | None, bulk: bool
) -> None:
    """Create a token with ROLE on one site; the token is printed once, on the last line."""
    site = _existing_site(client, domain)
    secret, token = create_token(client, name or f"{role} on {site.domain}", expires_in_days, bulk=bulk)
    grant(client, token.id, site.id, role)
    click.echo(
        f"Created token {token.id} named {token.name!r}: role {role} on {site.domain}, "
        f"lane {_lane(token)}, expires {token.expires_at or 'never'}."
    )
    click.echo("Copy the token now: only its hash is stored, it cannot be shown again.")
    click.echo(secret)


@tokens.command("list")
@click.pass_obj
def tokens_list(client: Redis) -> None:
    """List tokens with their status and grants (never their secrets)."""
    domains = {site.id: site.domain for site in list_sites(client)}
    now = datetime.now(UTC)
    rows = [
        (
            token.id,
            token.name,
            _status(token, now),
            _lane(token),
            token.created_at,
            token.last_used_at or "never",
            token.expires_at or "never",
            ", ".join(
                f"{role}@{domains.get(site_id, site_id)}"
                for site_id, role in sorted(grants_of(client, token.id).items())
            ),
        )
        for token in list_tokens(client)
    ]
    headers = ("ID", "NAME", "STATUS", "LANE", "CREATED", "LAST USED", "EXPIRES", "GRANTS")
    _echo_table(headers, rows, empty="No tokens.")


@tokens.command("revoke")
@click.argument("token_id", metavar="ID")
@click.pass_obj
def tokens_revoke(client: Redis, token_id: str) -> None:
    """Revoke the token with id ID; the API rejects it from then on."""
    token = revoke_token(client, token_id)
    click.echo(f"Token {token.id} ({token.name}) is revoked since {token.revoked_at}.")


# --- exclusions ---------------------------------------------------------------------------


@click.group(cls=ControlGroup)
def exclusions() -> None:
    """Exclusion rules: pageviews dropped before they are stored."""


@exclusions.command("add")
@click.option("--site", "domain", type=DOMAIN, default=None, help="Apply to this site only.")
@click.option("--instance", is_flag=True, help="Apply to every site.")
@click.option("--cidr", default=None, metavar="NET", help="Visitor IP inside this network.")
@click.option("--country", default=None, metavar="CC", help="Visitor country, ISO alpha-2.")
@click.option("--user-agent", default=None, metavar="TEXT", help="User agent contains TEXT (case-insensitive).")
@click.option("--path", default=None, metavar="PREFIX", help="Path is PREFIX or below it.")
@click.pass_obj
def exclusions_add(
    client: Redis,
    domain: str | None,
    instance: bool,
    cidr: str | None,
    country: str | None,
    user_agent: str | None,
    path: str | None,
) -> None:
    """Add a rule: one of --site/--instance and one of --cidr/--country/--user-agent/--path."""
    if (domain is None) == (not instance):
        raise click.UsageError("give exactly one of --site DOMAIN or --instance")
    values = {
        ExclusionKind.CIDR: cidr,
        ExclusionKind.COUNTRY: country,
        ExclusionKind.USER_AGENT: user_agent,
        ExclusionKind.PATH: path,
    }
    given = [(kind, value) for kind, value in values.items() if value is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --cidr, --country, --user-agent or --path")
    [(kind, value)] = given
    try:
        value = normalise_exclusion_value(kind, value)
    except ControlError as error:
        raise ArgumentError(str(error)) from None
    site = _existing_site(client, domain) if domain is not None else None
    rule = add_exclusion(client, site.id if site else INSTANCE_SCOPE, kind, value)
    scope = f"site {site.domain}" if site else "every site"
    click.echo(f"Added exclusion {rule.id}: {rule.kind} {rule.value} on {scope}.")


@exclusions.command("list")
@click.pass_obj
def exclusions_list(client: Redis) -> None:
    """List every exclusion rule."""
    domains = {site.id: site.domain for site in list_sites(client)}
    rows = [
        (
            rule.id,
            "instance" if rule.scope == INSTANCE_SCOPE else domains.get(rule.scope, rule.scope),
            rule.kind.value,
            rule.value,
            rule.created_at,
        )
        for rule in list_exclusions(client)
    ]
    _echo_table(("ID", "SCOPE", "KIND", "VALUE", "CREATED"), rows, empty="No exclusions.")


@exclusions.command("remove")
@click.argument("rule_id", metavar="ID")
@click.pass_obj
def exclusions_remove(client: Redis, rule_id: str) -> None:
    """Remove the exclusion rule with id ID."""
    if not remove_exclusion(client, rule_id):
        raise ControlError(f"no exclusion with id {rule_id!r}")
    click.echo(f"Removed exclusion {rule_id}.")


# --- helpers ------------------------------------------------------------------------------


def _existing_site(client: Redis, domain: str) -> Site:
    site = site_for_domain(client, domain)
    if site is None:
        raise ControlError(f"no site {normalise_domain(domain)}: add it first with 'hitstream sites add'")
    return site


def _lane(token: ApiToken) -> str:
    return Lane.BULK if token.bulk else Lane.LIVE


def _status(token: ApiToken, now: datetime) -> str:
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if token.is_expired(now) else "active"


def _echo_table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
    if not rows:
        click.echo(empty)
        return
    widths = [max(len(line[column]) for line in (headers, *rows)) for column in range(len(headers))]
    for line in (headers, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
