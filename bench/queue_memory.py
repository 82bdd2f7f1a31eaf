"""Redis memory per queued pageview, the figure the lane caps derived from Redis's maxmemory
rest on (``BYTES_PER_QUEUED_PAGEVIEW`` in shared/queue_caps.py).

    .venv/bin/python -m bench.queue_memory [--pageviews 200000]

Starts a Redis of its own (AOF on, a free port, a temporary folder) and ``hitstream api`` on
it, adds a site and a token, then posts ``--pageviews`` realistic pageviews (bench.api_bench's
body, each with its own visitor IP, path, session and timestamp) through the batch endpoint,
100 a request, twice: once without page_id (the API makes one; the envelope alone is queued),
once with a client-chosen page_id (each also leaves a seen key for HITSTREAM_IDEMPOTENCY_WINDOW,
24 h by default, whether or not it is still queued). No worker runs: everything stays queued.
Prints INFO memory's ``used_memory`` (what Redis compares with maxmemory) before and after
each round, divided by the pageviews the live lane gained (XLEN).
"""

from __future__ import annotations

import argparse
import http.client
import os
import tempfile
import uuid
from pathlib import Path

import orjson
import redis

from bench.api_bench import realistic_body, serve
from bench.replay_bench import HITSTREAM, free_port
from hitstream.redis_server import RedisServer
from shared import keys
from shared.control.grants import grant
from shared.control.sites import add_site
from shared.control.tokens import create_token

BATCH_ITEMS = 100


def batches(count: int, with_page_id: bool) -> list[bytes]:
    template = orjson.loads(realistic_body())
    items = []
    for number in range(count):
        item = {
            **template,
            "url": f"https://www.example.com/blog/{number % 5000}/queue-decoupled-ingest?utm_source=newsletter",
            "visitor_ip": f"2001:db8:{number >> 16:x}:{number & 0xFFFF:x}::1",
            "session_id": str(uuid.uuid4()),
            "timestamp": f"2026-11-28T{number // 3600 % 24:02d}:{number // 60 % 60:02d}:{number % 60:02d}.123Z",
        }
        if with_page_id:
            item["page_id"] = str(uuid.uuid4())
        items.append(item)
    return [orjson.dumps(items[start : start + BATCH_ITEMS]) for start in range(0, count, BATCH_ITEMS)]


def post_all(port: int, secret: str, bodies: list[bytes]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    for body in bodies:
        connection.request("POST", "/api/ingest/server/pageviews", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 202:
            raise RuntimeError(f"the API answered {response.status}: {answer[:200]!r}")
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pageviews", type=int, default=200_000, help="pageviews queued per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="queue-memory-") as data_dir:
        server = RedisServer(port=free_port(), data_dir=Path(data_dir))
        server.start()
        api = None
        try:
            control = redis.Redis.from_url(server.url)
            site = add_site(control, "example.com")
            secret, token = create_token(control, "queue-memory")
            grant(control, token.id, site.id, "owner")
            port = free_port()
            env = {
                **os.environ,
                "HITSTREAM_REDIS_URL": server.url,
                "HITSTREAM_RATE_LIMIT": "100000000",
                "HITSTREAM_RATE_BURST": "100000000",
                "HITSTREAM_QUEUE_MAX_DEPTH": "100000000",
                "HITSTREAM_TOKEN_QUEUE_SHARE": "1",
            }
            api = serve([*HITSTREAM, "api", "--port", str(port)], port, env)
            post_all(port, secret, batches(BATCH_ITEMS, with_page_id=False))  # warm-up: buckets, scripts
            for with_page_id in (False, True):
                bodies = batches(args.pageviews, with_page_id)
                depth_before = control.xlen(keys.STREAM)
                before = control.info("memory")["used_memory"]
                post_all(port, secret, bodies)
                after = control.info("memory")["used_memory"]
                queued = control.xlen(keys.STREAM) - depth_before
                what = "with client page_id (envelope + seen key)" if with_page_id else "API-made page_id (envelope)"
                print(
                    f"{what}: {queued:,} pageviews queued, used_memory {before:,} -> {after:,} bytes: "
                    f"{(after - before) / queued:,.0f} bytes per pageview"
                )
            envelope = control.xrange(keys.STREAM, count=1)[0][1][keys.ENVELOPE_FIELD.encode()]
            print(f"one envelope as queued: {len(envelope):,} bytes of JSON")
        finally:
            if api is not None:
                api.terminate()
                api.wait(30)
            server.stop()


if __name__ == "__main__":
    main()
