"""``hitstream up``: the whole pipeline on one machine, with one command.

It starts a Redis server when none answers (or, when the one answering at the default
address cannot give the durability mode, its own under the data directory), runs the
migrations, makes sure a demo site and
token exist, then runs ``hitstream api`` and ``hitstream worker`` as child processes against
the embedded store (``chdb://<data dir>/chdb``) and prints a ready ``curl`` command.

Every child runs in its own session, so a Ctrl-C in the terminal reaches only this process
and the shutdown happens in an order that loses nothing: the API stops first (no new 202s),
then the workers finish or release their claimed batches, then Redis (if we started it)
flushes its AOF. ``--workers N`` (default: one per core, at most 4) worker processes claim and
enrich; only one process may open a chdb path, so with the embedded store one more process
owns it and writes for them all, and ``hitstream stats`` reads through that one.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson
import redis
from rq import Queue, Worker

from hitstream.crawlers_update import RANGES_NAME
from hitstream.geoip_update import database_on_first_start
from hitstream.redis_server import NoLocalRedis, RedisServer, ensure_redis, redis_answers
from shared.config import DEFAULT_REDIS_URL, Settings, load_settings
from shared.control.grants import Permission, Role, can, grant, role_on_site
from shared.control.sites import Site, add_site, site_for_domain
from shared.control.tokens import ApiToken, create_token, token_key
from shared.durability import durability_config, refusal
from shared.keys import STORE_QUEUE
from shared.redis_client import redis_client
from shared.redis_safety import check_redis
from shared.stop_signals import watch_stop_signals
from shared.urls import redacted

DEMO_DOMAIN = "demo.localhost"
DEMO_TOKEN_NAME = "hitstream up demo"
READY_SECONDS = 60.0
API_STOP_SECONDS = 15.0
# The worker's warm shutdown finishes its batch or releases it; past this bound it is killed
# and the batch returns to the queue when its lease expires (nothing is lost either way).
WORKER_STOP_SECONDS = 30.0

# The same interpreter and code as this process, whatever the ``hitstream`` script's path.
HITSTREAM = [sys.executable, "-m", "hitstream"]


class StopRequest:
    """Set by SIGINT or SIGTERM (shared.stop_signals); the supervisor polls it between checks
    on its children."""

    def __init__(self) -> None:
        self.event = threading.Event()
        watch_stop_signals(self.event)

    def wait(self, seconds: float) -> bool:
        return self.event.wait(seconds)

    def __bool__(self) -> bool:
        return self.event.is_set()


@dataclass
class Child:
    """A ``hitstream`` sub-command running as the leader of its own process group."""

    name: str
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, name: str, args: list[str], env: dict[str, str]) -> Child:
        process = subprocess.Popen([*HITSTREAM, *args], env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        return cls(name, process)

    def exit_code(self) -> int | None:
        return self.process.poll()

    def stop(self, timeout: float) -> None:
        """SIGTERM (a graceful stop), SIGKILL after ``timeout``, then reap its group."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                click.echo(f"hitstream up: {self.name} did not stop in {timeout:.0f} s; killing it", err=True)
                self.process.kill()
                self.process.wait()
        # Anything the child started and left behind dies with its group.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def start_redis(settings: Settings, data_dir: Path) -> tuple[str, RedisServer | None]:
    """The Redis URL the pipeline uses, and the server ``up`` started for it (None: one that
    already answered).

    A Redis already answering is used when it can give the durability mode. One that cannot
    (a machine's pre-started Redis without AOF) is never reconfigured: at the default address
    ``up`` starts its own with its files under the data directory, on a Unix socket of its own
    (``own_socket``: one address per data directory, so two ``up``s cannot share one AOF); at
    an address the operator chose,
    it stops and says why."""
    try:
        started = ensure_redis(settings.redis_url, data_dir)
    except NoLocalRedis as error:
        raise click.ClickException(str(error)) from None
    if started is not None:
        return settings.redis_url, started
    client = redis_client(settings.redis_url)
    try:
        reason = refusal(settings.durability, durability_config(client))
    finally:
        client.close()
    if reason is None:
        return settings.redis_url, None
    if os.environ.get("HITSTREAM_REDIS_URL"):
        raise click.ClickException(f"the Redis at HITSTREAM_REDIS_URL cannot be used: {reason}")
    own = RedisServer(port=0, data_dir=data_dir, unix_socket=own_socket(data_dir))
    click.echo(
        f"hitstream up: not using the Redis at {redacted(settings.redis_url)} ({reason}); "
        f"running one of its own under {data_dir}",
        err=True,
    )
    if not redis_answers(own.url):
        own.start()
        return own.url, own
    return own.url, None


def own_socket(data_dir: Path) -> Path:
    """The Unix socket of the Redis ``up`` runs for ``data_dir``: in the temporary directory,
    not the data directory, whose file system may not hold sockets (FUSE, network mounts
    refuse them) and whose path may exceed a socket path's 107 bytes; named by a hash of the
    data directory, so each has its own."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"hitstream-redis-{digest}.sock"


def demo_token(client: redis.Redis, data_dir: Path) -> str:
    """The secret of the demo site's owner token, created on first run.

    The secret is kept in ``<data dir>/demo-token`` (mode 0600) so every later ``up`` prints
    the same command. Writing a secret to disk is acceptable only for this local demo: its
    owner is the person running ``up``. Real tokens are shown once and stored only hashed.
    """
    site = site_for_domain(client, DEMO_DOMAIN) or add_site(client, DEMO_DOMAIN)
    token_file = data_dir / "demo-token"
    if token_file.exists():
        secret = token_file.read_text().strip()
        if may_ingest(client, secret, site):
            return secret
    secret, token = create_token(client, DEMO_TOKEN_NAME, expires_in_days=None)
    grant(client, token.id, site.id, Role.OWNER)
    descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n")
    return secret


def may_ingest(client: redis.Redis, secret: str, site: Site) -> bool:
    """Whether the API would accept pageviews for ``site`` with this secret (a kept demo
    token may be gone, e.g. after ``var/redis`` was deleted, or revoked)."""
    values = client.hgetall(token_key(secret))
    if not values:
        return False
    token = ApiToken.from_hash(values)
    role = role_on_site(client, token.id, site.id)
    return token.is_usable(datetime.now(UTC)) and can(role, Permission.SITE_MANAGE_DATA)


def api_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def worker_listening(client: redis.Redis, group: int) -> bool:
    """Whether our worker (a process in the worker child's process group: with several worker
    processes, the one that owns the store) registered with RQ on the store queue. It opens
    the store before it registers, so from then on ``hitstream stats`` is answered by it
    instead of racing it for the embedded store."""
    workers = Worker.all(connection=client, queue=Queue(STORE_QUEUE, connection=client))
    return any(worker.pid is not None and _process_group(worker.pid) == group for worker in workers)


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None  # a stale registration of a worker that is gone


def default_workers() -> int:
    """Worker processes ``up`` runs by default: one per core, at most 4."""
    return min(os.cpu_count() or 1, 4)


def wait_until(ready: Callable[[], bool], what: str, children: list[Child], stop: StopRequest) -> None:
    """Poll ``ready`` until it holds; fail if a child exits first or it takes too long."""
    deadline = time.monotonic() + READY_SECONDS
    while not stop:
        if ready():
            return
        exited = first_exited(children)
        if exited is not None:
            raise click.ClickException(f"{exited.name} exited with code {exited.exit_code()} while starting")
        if time.monotonic() > deadline:
            raise click.ClickException(f"{what} was not ready after {READY_SECONDS:.0f} s")
        stop.wait(0.1)


def first_exited(children: list[Child]) -> Child | None:
    return next((child for child in children if child.exit_code() is not None), None)


def curl_command(base_url: str, secret: str) -> str:
    """A ready-to-paste request for one realistic pageview on the demo site, timed now."""
    body = {
        "url": f"https://{DEMO_DOMAIN}/pricing?utm_source=newsletter&utm_campaign=launch",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "visitor_ip": "81.2.69.160",  # London in DB-IP City Lite: stats show a country and city
        "referrer": "https://news.example.org/",
        "language": "en-US",
        "screen_width": 1920,
        "screen_height": 1080,
    }
    return (
        f"curl -i -X POST {base_url}/api/ingest/server/pageview"
        f" -H {shlex.quote('Authorization: Bearer ' + secret)}"
        " -H 'Content-Type: application/json'"
        f" -d {shlex.quote(orjson.dumps(body).decode())}"
    )


def stats_command(redis_url: str, store_url: str, geoip_city_db: str) -> str:
    """``hitstream stats`` for the demo site, with whatever a new shell in this directory
    would not pick up by default (the GeoIP database: for the credit its licence asks for)."""
    defaults = {
        "HITSTREAM_REDIS_URL": (redis_url, DEFAULT_REDIS_URL),
        "HITSTREAM_CLICKHOUSE_URL": (store_url, f"chdb://{Path.cwd() / 'var' / 'chdb'}"),
        "HITSTREAM_GEOIP_CITY_DB": (geoip_city_db, os.environ.get("HITSTREAM_GEOIP_CITY_DB", "")),
    }
    prefix = "".join(f"{name}={shlex.quote(value)} " for name, (value, default) in defaults.items() if value != default)
    return f"{prefix}hitstream stats --site {DEMO_DOMAIN} --json"


def shut_down(api: Child | None, worker: Child | None, redis_server: RedisServer | None) -> None:
    """API first (no new 202s), then the worker's warm shutdown, then our Redis (AOF flush)."""
    if api is not None:
        api.stop(API_STOP_SECONDS)
    if worker is not None:
        worker.stop(WORKER_STOP_SECONDS)
    if redis_server is not None:
        redis_server.stop()


@click.command()
@click.option("--port", default=8000, show_default=True, help="Port for the ingest API.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the API binds to.")
@click.option(
    "--data-dir",
    default="./var",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where Redis's AOF, the chdb store and the demo token live.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=default_workers,
    show_default="cores, at most 4",
    help="Worker processes that claim and enrich batches (with the embedded store, plus one that writes).",
)
def up(port: int, host: str, data_dir: Path, workers: int) -> None:
    """Run Redis (if none answers), migrations, the API and a worker on this machine."""
    stop = StopRequest()
    settings = load_settings()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # An explicit HITSTREAM_CLICKHOUSE_URL (e.g. a ClickHouse server) wins over the embedded store.
    store_url = os.environ.get("HITSTREAM_CLICKHOUSE_URL") or f"chdb://{data_dir / 'chdb'}"
    env = {**os.environ, "HITSTREAM_CLICKHOUSE_URL": store_url}
    # Geo out of the box: a configured HITSTREAM_GEOIP_CITY_DB wins, else DB-IP City Lite under the data dir.
    if settings.geoip_city_db is None and (city_db := database_on_first_start(data_dir / "geoip")) is not None:
        env["HITSTREAM_GEOIP_CITY_DB"] = str(city_db)
    geoip_city_db = env.get("HITSTREAM_GEOIP_CITY_DB", "")
    # Crawler ranges: the vendored snapshot until `hitstream crawlers update` writes its file there.
    if settings.crawler_ranges is None:
        env["HITSTREAM_CRAWLER_RANGES"] = str(data_dir / "crawlers" / RANGES_NAME)
    client_host = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
    base_url = f"http://{client_host}:{port}"

    redis_server: RedisServer | None = None
    api: Child | None = None
    worker: Child | None = None
    client: redis.Redis | None = None
    try:
        # A Ctrl-C during a step (held from the start: hitstream.launch) ends up before the next.
        redis_url, redis_server = start_redis(settings, data_dir / "redis")
        if stop:
            return
        env["HITSTREAM_REDIS_URL"] = redis_url
        client = redis_client(redis_url)
        check_redis(client, settings)  # a Redis already running may evict (shared.redis_safety)
        # Migrations run in their own process, which closes the chdb store before the worker opens it.
        if subprocess.run([*HITSTREAM, "migrate"], env=env, start_new_session=True).returncode != 0:
            raise click.ClickException("migrations failed (see above)")
        if stop:
            return
        secret = demo_token(client, data_dir)
        worker = Child.start("worker", ["worker", "--processes", str(workers)], env)
        api = Child.start("api", ["api", "--host", host, "--port", str(port)], env)
        children = [api, worker]
        worker_group = worker.process.pid  # the leader of its own session and process group
        wait_until(lambda: worker_listening(client, worker_group), "the worker", children, stop)
        wait_until(lambda: api_ready(base_url), f"the API at {base_url}", children, stop)
        if stop:
            return
        origin = "started by hitstream up" if redis_server else "already running"
        click.echo(
            f"\nhitstream is up: API {base_url}, Redis {redacted(redis_url)} ({origin}),"
            f" store {redacted(store_url)}\n\n"
            f"Send a pageview:\n  {curl_command(base_url, secret)}\n\n"
            f"See it stored (in another shell):\n  {stats_command(redis_url, store_url, geoip_city_db)}\n\n"
            f"The demo token is kept in {data_dir / 'demo-token'} (mode 0600) so the next up "
            "prints the same command. Ctrl-C stops everything.\n"
        )
        while not stop.wait(0.2):
            exited = first_exited(children)
            if exited is not None:
                raise click.ClickException(
                    f"{exited.name} exited unexpectedly with code {exited.exit_code()}; stopped everything"
                )
    finally:
        if client is not None:
            client.close()
        shut_down(api, worker, redis_server)
