"""The edge-worker example (docs/examples/edge-worker.mjs) run by node against a live API and
worker: the page it serves is recorded once in the store, the JSON answer is not."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.procs import Processes, query_store
from tests.test_api_store import drain
from tests.traffic import VISITOR_IPS, ingest_token

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "edge-worker.mjs"
NODE = shutil.which("node")

# Runs in node: the worker's fetch handler for each request, as an edge platform would call
# it, waiting for what it handed to ctx.waitUntil; prints each response's status and what
# the recording answered.
_PLATFORM = """
const { default: worker } = await import(process.env.EXAMPLE);
const env = { HITSTREAM_URL: process.env.HITSTREAM_URL, HITSTREAM_TOKEN: process.env.HITSTREAM_TOKEN,
              ORIGIN: process.env.ORIGIN };
const results = [];
for (const path of ["/pricing?utm_source=edge", "/api/data"]) {
  const waiting = [];
  const request = new Request("https://example.com" + path, { headers: {
    "cf-connecting-ip": process.env.VISITOR_IP, "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    "accept-language": "fr-CH, fr;q=0.9" } });
  const response = await worker.fetch(request, env, { waitUntil: (promise) => waiting.push(promise) });
  results.push({ path, status: response.status, recorded: await Promise.all(waiting) });
}
console.log(JSON.stringify(results));
"""


@pytest.fixture
def origin() -> Iterator[str]:
    """The site's origin server: an HTML page at /pricing, JSON at /api/data."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = self.path.startswith("/pricing")
            body = b"<h1>Pricing</h1>" if page else b'{"n": 1}'
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8" if page else "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_the_edge_worker_example_records_the_page_it_serves_in_the_store(
    processes: Processes, real_redis: redis.Redis, tmp_path: Path, origin: str
) -> None:
    api = processes.api()
    env = {
        **os.environ,
        "EXAMPLE": EXAMPLE.as_uri(),
        "HITSTREAM_URL": api.url,
        "HITSTREAM_TOKEN": ingest_token(real_redis),
        "ORIGIN": origin,
        "VISITOR_IP": VISITOR_IPS[0],
    }
    ran = subprocess.run(
        [str(NODE), "--input-type=module", "-e", _PLATFORM], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == [
        {"path": "/pricing?utm_source=edge", "status": 200, "recorded": [202]},
        {"path": "/api/data", "status": 200, "recorded": []},
    ]

    store = tmp_path / "store"
    drain(real_redis, processes, store)
    assert query_store(store, "SELECT hostname, path, utm_source, language FROM pageviews") == [
        ["example.com", "/pricing", "edge", "fr-CH"]
    ]
