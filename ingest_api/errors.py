"""The API's error answers: JSON ``{"message": ...}`` with HitKeep's texts.

Every failure a check can report is an ``ApiError``, answered by ``error_response``; the two
refusals that carry ``Retry-After`` have one helper each, whoever answers them:
``too_many_requests`` (429: Redis's verdict, or a bucket the process knows is empty) and
``service_unavailable`` (503: Redis away or too slow, a full lane or token share, a process
past its connection cap). So status codes, messages and headers cannot drift between code
paths. The operational routes and Starlette's own answers (unknown path, wrong method, a
failing route) use the same body (``error_body``; ingest_api.front).
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from ingest_api.answer import Answer, json_answer

# HitKeep's texts (docs/contract.md). Our extra 400s name their field instead.
BAD_BODY = "Bad request body"
BAD_URL = "url must be an absolute http or https URL"
BAD_TIMESTAMP = "timestamp must be RFC3339"
FUTURE_TIMESTAMP = "timestamp must not be more than 24 hours in the future"
BAD_VISITOR_IP = "visitor_ip must be a valid IP address"
MISSING_USER_AGENT = "user_agent is required"
UNAUTHORIZED = "Unauthorized"
ACCESS_DENIED = "Access denied"
SITE_NOT_FOUND = "Site not found"
TOO_MANY_REQUESTS = "Too Many Requests"
SERVICE_NOT_AVAILABLE = "Service not available"
# Ours: a full lane answers like Redis being unavailable (HitKeep's text); a full share says
# why, as it concerns one token only.
TOKEN_SHARE_FULL = f"{SERVICE_NOT_AVAILABLE}: this token's share of its lane's queue is full"
HEADERS_TOO_LARGE = "Request header fields too large"  # ours: uvicorn sets no header limit
# Answers outside the ingest checks: HTTP reason phrases, as Starlette's own answers carry.
METHOD_NOT_ALLOWED = "Method Not Allowed"
INTERNAL_ERROR = "Internal Server Error"
REDIS_NOT_READY = "Redis does not answer"
REQUEST_TIMEOUT = "Request timeout"  # ours: the body did not arrive in time (ingest_api.connections)
# Ours: the event and batch endpoints.
MISSING_NAME = "name is required"
BAD_PROPERTIES = "properties must be a flat object of strings, numbers or booleans"
BAD_BATCH = "batch must be a JSON array, or NDJSON with Content-Type: application/x-ndjson"
EMPTY_BATCH = "batch must hold at least one item"
IDEMPOTENCY_KEY_REUSED = "Idempotency-Key was already used with a different request body"  # 422
# HitKeep's texts for its AI-fetch endpoint (POST /api/sites/{id}/ingest/ai-fetch).
INVALID_SITE_ID = "Invalid site_id"
BAD_STATUS_CODE = "status_code must be between 100 and 599"
UNKNOWN_CRAWLER = "user_agent must match a known AI bot"
MISSING_PATH = "path is required"
# Ours, for the AI-fetch endpoint's extra checks.
BAD_HOSTNAME = "hostname must be a host name (no scheme, path or spaces)"
BAD_PATH = "path must not contain control characters or spaces"


# Every 503 asks the client to come back after this long.
UNAVAILABLE_RETRY_AFTER_SECONDS = 1


def wrong_type(field: str, expected: str) -> str:
    """HitKeep's text for a field of the wrong JSON type, naming the field."""
    return f"{BAD_BODY}: {field} must be {expected}"


def too_long(field: str, limit: int) -> str:
    return f"{field} must be at most {limit} characters"


def out_of_range(field: str, low: int, high: int) -> str:
    return f"{field} must be an integer from {low} to {high}"


def time_out_of_range(field: str, earliest: str, latest: str) -> str:
    return f"{field} must be from {earliest} to {latest}"


class ApiError(Exception):
    """A request the endpoint refuses, with the status, message and headers to answer."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    def __init__(self, message: str = BAD_BODY) -> None:
        super().__init__(400, message)


def error_body(message: str) -> bytes:
    """The one shape of every error answer, on every route: ``{"message": ...}``."""
    return orjson.dumps({"message": message})


def error_response(error: ApiError) -> Answer:
    return json_answer(error.status, error_body(error.message), error.headers)


def too_many_requests(limit: int, remaining: int, reset_seconds: int, retry_after_seconds: int) -> Answer:
    """The 429: the rate bucket cannot pay for the request. ``remaining`` whole items (at most,
    when the process decided alone), full again in ``reset_seconds``, enough for the request
    in ``retry_after_seconds``."""
    headers = {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset_seconds),
        "Retry-After": str(retry_after_seconds),
    }
    return json_answer(429, error_body(TOO_MANY_REQUESTS), headers)


def service_unavailable(message: str = SERVICE_NOT_AVAILABLE) -> Answer:
    """The 503: nothing was promised; the client may retry after ``Retry-After``."""
    return json_answer(503, error_body(message), {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})
