"""Posting pageviews to the ingest endpoints until each has a final answer.

429 and 503 wait for the answer's Retry-After (plus jitter) and send the same request again;
other 5xx answers and connection errors back off exponentially. Nothing is ever dropped: a
request ends only with an accepted or a final rejected answer for every pageview in it.

Every request asks for the bulk lane (shared.lanes), so a replay's flood is queued apart from
live traffic and cannot delay it; a token that may not use it (a live token) stops the replay
with ``LaneRefused`` at the first answer, before any line is recorded as rejected.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import aiohttp
import orjson

from shared.lanes import LANE_HEADER, Lane

SINGLE_PATH = "/api/ingest/server/pageview"
BATCH_PATH = "/api/ingest/server/pageviews"
BATCH_MAX_ITEMS = 1000
BATCH_MAX_BYTES = 1 << 20
RETRY_AFTER_STATUSES = frozenset({429, 503})
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 30.0


class LaneRefused(Exception):
    """The API refused the bulk lane to this token (the message says why and what to do)."""


@dataclass
class Batch:
    """Encoded bodies sent in one request, with the input line of each."""

    lines: list[int] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    size: int = 2  # bytes of the JSON array: brackets, then each body and its comma

    def add(self, line: int, body: bytes) -> None:
        self.lines.append(line)
        self.bodies.append(body)
        self.size += len(body) + 1

    def fits(self, body: bytes, max_items: int) -> bool:
        return len(self.bodies) < max_items and self.size + len(body) + 1 <= BATCH_MAX_BYTES


@dataclass(frozen=True, slots=True)
class Answer:
    line: int
    status: int
    message: str  # empty when accepted

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    retry_after: str | None

    @property
    def success(self) -> bool:
        return 200 <= self.status < 300


class Sender:
    def __init__(
        self, session: aiohttp.ClientSession, url: str, token: str, *, batch: bool, retries: Counter[str]
    ) -> None:
        self._session = session
        self._url = url.rstrip("/")  # may carry a path prefix (a reverse proxy's)
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            LANE_HEADER: Lane.BULK,
        }
        self._batch = batch
        self._retries = retries

    async def send(self, batch: Batch) -> list[Answer]:
        if self._batch:
            reply = await self._post(BATCH_PATH, b"[" + b",".join(batch.bodies) + b"]")
            return _batch_answers(batch, reply)
        (line,), (body,) = batch.lines, batch.bodies
        reply = await self._post(SINGLE_PATH, body)
        return [Answer(line, reply.status, "" if reply.success else _message(reply))]

    async def _post(self, path: str, content: bytes) -> Reply:
        failures = 0
        while True:
            try:
                async with self._session.post(self._url + path, data=content, headers=self._headers) as response:
                    reply = Reply(response.status, await response.read(), response.headers.get("Retry-After"))
            except (TimeoutError, aiohttp.ClientError) as error:
                reason = f"connection error ({type(error).__name__})"
                delay = None
            else:
                if reply.status == 403 and _message(reply).startswith(f"{LANE_HEADER}:"):
                    raise LaneRefused(_message(reply))
                if reply.status < 500 and reply.status not in RETRY_AFTER_STATUSES:
                    return reply
                reason = str(reply.status)
                delay = retry_after_seconds(reply.retry_after)
            failures += 1
            self._retries[reason] += 1
            if delay is None:
                delay = min(FIRST_BACKOFF_SECONDS * 2 ** (failures - 1), MAX_BACKOFF_SECONDS)
            # Never sooner than asked; jitter spreads the retries of concurrent requests.
            await asyncio.sleep(delay * random.uniform(1.0, 1.25))


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((moment - datetime.now(UTC)).total_seconds(), 0.0)


def _message(reply: Reply) -> str:
    try:
        body = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    text = reply.body.decode("utf-8", "replace").strip()[:200]
    if text:
        return text
    try:
        return HTTPStatus(reply.status).phrase
    except ValueError:
        return f"HTTP {reply.status}"


def _batch_answers(batch: Batch, reply: Reply) -> list[Answer]:
    """202 (or an all-rejected 400) lists rejected items by index; the other items share the
    response's own answer (accepted on 2xx, the error otherwise)."""
    shared_message = "" if reply.success else _message(reply)
    rejected = {item["index"]: item for item in _rejected_items(reply)}
    answers = []
    for index, line in enumerate(batch.lines):
        item = rejected.get(index)
        if item is None:
            answers.append(Answer(line, reply.status, shared_message))
        else:
            answers.append(Answer(line, int(item.get("status", 400)), str(item.get("message", ""))))
    return answers


def _rejected_items(reply: Reply) -> list[dict[str, Any]]:
    try:
        body = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        return []
    rejected = body.get("rejected") if isinstance(body, dict) else None
    if not isinstance(rejected, list):
        return []
    return [item for item in rejected if isinstance(item, dict) and isinstance(item.get("index"), int)]
