"""``hitstream sites | tokens | exclusions`` against the suite's real Redis."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner, Result

from hitstream.main import cli
from shared import keys
from shared.control.exclusions import list_exclusions
from shared.control.grants import Role, role_on_site
from shared.control.sites import site_for_domain
from shared.control.tokens import ApiToken, token_key
from tests.ports import free_port

Run = Callable[..., Result]


@pytest.fixture
def run(hitstream_env: dict[str, str]) -> Run:
    """``hitstream ARGS...`` against this test's clean Redis database."""
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_sites_add_list_remove(run: Run, real_redis: redis.Redis) -> None:
    added = run("sites", "add", "https://WWW.Bücher.de/")
    assert added.exit_code == 0, added.output
    assert "xn--bcher-kva.de" in added.output

    listed = run("sites", "list")
    site = site_for_domain(real_redis, "bücher.de")
    assert site is not None
    assert site.id in listed.output and "xn--bcher-kva.de" in listed.output

    removed = run("sites", "remove", "bücher.de")
    assert removed.exit_code == 0
    assert site_for_domain(real_redis, "bücher.de") is None
    assert run("sites", "list").output.strip() == "No sites."


def test_duplicate_site_is_a_clear_error(run: Run) -> None:
    run("sites", "add", "example.com")
    result = run("sites", "add", "www.example.com")

    assert result.exit_code == 1
    assert "site example.com already exists" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_tokens_create_prints_the_token_alone_on_the_last_line(run: Run, real_redis: redis.Redis) -> None:
    run("sites", "add", "example.com")

    result = run(
        "tokens", "create", "--site", "example.com", "--role", "admin", "--name", "backend", "--expires-in", "30"
    )

    assert result.exit_code == 0, result.stderr
    secret = result.stdout.splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert real_redis.exists(keys.TOKEN.format(token_hash=digest))
    token = ApiToken.from_hash(real_redis.hgetall(token_key(secret)))
    assert token.name == "backend" and token.expires_at is not None
    site = site_for_domain(real_redis, "example.com")
    assert site is not None
    assert role_on_site(real_redis, token.id, site.id) is Role.ADMIN
    assert not any(secret.encode() in key for key in real_redis.scan_iter())


def test_tokens_list_never_shows_secrets_or_hashes(run: Run, real_redis: redis.Redis) -> None:
    run("sites", "add", "example.com")
    created = run("tokens", "create", "--site", "example.com", "--role", "viewer")
    secret = created.stdout.splitlines()[-1]

    listed = run("tokens", "list")

    token = ApiToken.from_hash(real_redis.hgetall(token_key(secret)))
    assert token.id in listed.output
    assert "viewer@example.com" in listed.output and "active" in listed.output
    assert secret not in listed.output
    assert hashlib.sha256(secret.encode()).hexdigest() not in listed.output


def test_tokens_revoke(run: Run, real_redis: redis.Redis) -> None:
    run("sites", "add", "example.com")
    secret = run("tokens", "create", "--site", "example.com", "--role", "owner").stdout.splitlines()[-1]
    token_id = ApiToken.from_hash(real_redis.hgetall(token_key(secret))).id

    assert run("tokens", "revoke", token_id).exit_code == 0

    assert ApiToken.from_hash(real_redis.hgetall(token_key(secret))).revoked_at is not None
    assert "revoked" in run("tokens", "list").output
    unknown = run("tokens", "revoke", "nope")
    assert unknown.exit_code == 1 and "no token with id 'nope'" in unknown.stderr


def test_tokens_create_for_an_unknown_site_creates_nothing(run: Run, real_redis: redis.Redis) -> None:
    result = run("tokens", "create", "--site", "missing.example", "--role", "admin")

    assert result.exit_code == 1
    assert "no site missing.example" in result.stderr
    assert real_redis.hlen(keys.TOKEN_HASH_BY_ID) == 0


def test_exclusions_add_list_remove(run: Run, real_redis: redis.Redis) -> None:
    run("sites", "add", "example.com")
    assert run("exclusions", "add", "--instance", "--cidr", "10.1.0.0/8").exit_code == 0
    assert run("exclusions", "add", "--site", "example.com", "--path", "/admin/").exit_code == 0

    listed = run("exclusions", "list").output
    assert "instance" in listed and "10.0.0.0/8" in listed
    assert "example.com" in listed and "/admin" in listed

    rule = next(rule for rule in list_exclusions(real_redis) if rule.value == "/admin")
    assert run("exclusions", "remove", rule.id).exit_code == 0
    assert [r.value for r in list_exclusions(real_redis)] == ["10.0.0.0/8"]
    assert run("exclusions", "remove", rule.id).exit_code == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--cidr", "10.0.0.0/8"), "exactly one of --site DOMAIN or --instance"),
        (("--instance", "--site", "example.com", "--cidr", "10.0.0.0/8"), "exactly one of --site"),
        (("--instance",), "exactly one of --cidr"),
        (("--instance", "--country", "DE", "--path", "/x"), "exactly one of --cidr"),
        (("--instance", "--country", "Germany"), "invalid country exclusion 'Germany'"),
        (("--site", "missing.example", "--country", "DE"), "no site missing.example"),
    ],
)
def test_exclusions_add_rejects_bad_input(
    run: Run, real_redis: redis.Redis, args: tuple[str, ...], message: str
) -> None:
    run("sites", "add", "example.com")
    result = run("exclusions", "add", *args)

    assert result.exit_code != 0
    assert message in result.stderr
    assert list_exclusions(real_redis) == []


def test_unreachable_redis_names_the_variable_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nobody_listens = free_port()
    monkeypatch.setenv("HITSTREAM_REDIS_URL", f"redis://:hunter2@127.0.0.1:{nobody_listens}/0")

    result = CliRunner().invoke(cli, ["sites", "list"])

    assert result.exit_code == 1
    assert "HITSTREAM_REDIS_URL" in result.stderr and "does not answer" in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr
