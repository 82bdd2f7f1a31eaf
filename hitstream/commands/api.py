"""``hitstream api``: serve the ingest API with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import copy
import os

import click
import redis
import uvicorn
import uvicorn.loops.uvloop  # noqa: F401 (see release_stop_signals below)
from uvicorn.config import LOGGING_CONFIG

from ingest_api.connections import GuardedHttpTools
from shared.config import load_settings
from shared.queue_caps import cap_variables, check_caps
from shared.redis_client import COMMAND_SECONDS, redis_client
from shared.redis_safety import check_redis
from shared.stop_signals import release_stop_signals
from shared.urls import redacted

KEEP_ALIVE_SECONDS = 5  # uvicorn's default, named here: an idle keep-alive connection closes after it


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="API processes.")
def api(host: str, port: int, workers: int) -> None:
    """Serve POST /api/ingest/server/pageview, /healthz, /readyz, /metrics, /api/openapi.json."""
    settings = load_settings()  # a bad HITSTREAM_* variable stops here, naming the variable
    client = redis_client(settings.redis_url, timeout_seconds=COMMAND_SECONDS)
    try:
        safety = check_redis(client, settings)  # an evicting Redis stops here (shared.redis_safety)
        capped = check_caps(settings, safety.maxmemory)  # unset caps fit Redis's maxmemory (shared.queue_caps)
        if capped != settings:
            click.echo(
                f"hitstream api: lane caps derived from Redis's maxmemory ({safety.maxmemory:,} bytes): "
                f"live {capped.queue_max_depth:,}, bulk {capped.bulk_queue_max_depth:,} pageviews",
                err=True,
            )
        # uvicorn's API processes read their settings from the environment: the caps go with it.
        os.environ.update(cap_variables(capped))
    except redis.RedisError as error:
        # Not fatal: the API answers 503 until Redis answers, and /readyz says so; the caps
        # keep their defaults (or the values set).
        click.echo(f"hitstream api: could not check Redis at {redacted(settings.redis_url)}: {error}", err=True)
    finally:
        client.close()
    # A stop held since the process started (hitstream.launch) acts here: SIGINT raises
    # KeyboardInterrupt ("Aborted!"), SIGTERM ends the process; nothing is serving yet. From
    # here uvicorn's own handlers take over once it starts; the loop it imports before them
    # was imported above, with the signals held.
    release_stop_signals()
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["hitstream"] = {"handlers": ["default"], "level": settings.log_level}
    uvicorn.run(
        "ingest_api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        # No WebSocket routes: an upgrade request is served as plain HTTP (a JSON 404 or 405)
        # instead of a handshake the app would refuse with uvicorn's bare 403.
        ws="none",
        # uvicorn's httptools protocol with a connection cap and head/body time limits
        # (HITSTREAM_MAX_CONNECTIONS, _HEADER_TIMEOUT, _BODY_TIMEOUT; see ingest_api.connections).
        http=GuardedHttpTools,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        access_log=False,  # ingest_api.front logs each request without IPs or tokens
        # The caller comes from X-Forwarded-For only behind HITSTREAM_TRUSTED_PROXIES
        # (ingest_api.proxies); uvicorn's own rewrite would trust any local peer's header.
        proxy_headers=False,
        server_header=False,  # one header less on every answer; the version is nobody's business
        log_config=log_config,
        log_level=settings.log_level.lower(),
    )
