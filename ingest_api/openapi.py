"""The OpenAPI 3.1 description of what the API really does, served at /api/openapi.json.

The body schemas come from the field table (ingest_api.fields) that the checks use, so the
document cannot disagree with them.
"""

from __future__ import annotations

from typing import Any

from ingest_api import errors
from ingest_api.ai_fetch import AI_FETCH_BATCH_PATH, AI_FETCH_PATH
from ingest_api.batch import MAX_BATCH_BYTES, MAX_BATCH_ITEMS, NDJSON, TOO_MANY
from ingest_api.fields import AI_FETCH_BODY, EVENT_BODY, PAGEVIEW_BODY, body_schema
from ingest_api.front import MAX_HEADER_BYTES
from ingest_api.intake import LIVE_TOKEN_IN_BULK
from ingest_api.validation import MAX_BODY_BYTES
from shared.lanes import LANE_HEADER, Lane

PAGEVIEW_PATH = "/api/ingest/server/pageview"
EVENT_PATH = "/api/ingest/server/event"
BATCH_PATH = "/api/ingest/server/pageviews"

# Keys, as HitKeep's Go decoder reads them; said once for every body schema.
_KEYS = (
    "Keys match fields as Go's encoding/json (HitKeep) matches them: an exact name, else the "
    "same name in another case (`URL`, `Visitor_IP`); when several keys name one field, the "
    "last in the document wins (null included). Unknown keys are ignored."
)

_BATCH_ANSWER = {
    "type": "object",
    "required": ["accepted", "rejected"],
    "properties": {
        "accepted": {
            "type": "integer",
            "minimum": 0,
            "description": "Items accepted (queued, dnt, or a page_id already stored).",
        },
        "rejected": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "status", "message"],
                "properties": {
                    "index": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "0-based item (or line).",
                    },
                    "status": {"type": "integer", "enum": [400, 403, 404]},
                    "message": {
                        "type": "string",
                        "description": "The single endpoint's message.",
                    },
                },
            },
        },
    },
    "example": {
        "accepted": 2,
        "rejected": [{"index": 1, "status": 404, "message": errors.SITE_NOT_FOUND}],
    },
}


def _integer_header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "integer", "minimum": 0}}


_RATE_HEADERS = {
    "RateLimit-Limit": _integer_header("Burst size of the token's bucket (items)."),
    "RateLimit-Remaining": _integer_header("Items left in the bucket now."),
    "RateLimit-Reset": _integer_header("Seconds until the bucket is full again."),
}
_RETRY_AFTER = {"Retry-After": _integer_header("Seconds to wait before retrying.")}
_LANE_PARAMETER = {
    "name": LANE_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": [lane.value for lane in Lane]},
    "description": "The queue lane: `live` (current traffic) or `bulk` (replays of history, with "
    "a larger cap of their own; workers serve live traffic first). The token decides: a bulk "
    "token (`hitstream tokens create --bulk`) always uses the bulk lane. `hitstream replay` "
    "sends `bulk` to make its intent explicit; a live token asking for `bulk` (or a bulk token "
    "for `live`) gets 403, any other value 400.",
}


def _error(description: str, example: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Error"},
                "example": {"message": example},
            }
        },
    }
    if headers:
        response["headers"] = headers
    return response


def _text(description: str, media_type: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {media_type: {"schema": {"type": "string"}}},
    }


def _batch_answer(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _RATE_HEADERS,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/BatchAnswer"},
                        {"$ref": "#/components/schemas/Error"},
                    ]
                }
            }
        },
    }


_SITE_ID_PARAMETER = {
    "name": "site_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
    "description": f"The site's id (any case); not a UUID: 400 `{errors.INVALID_SITE_ID}`.",
}
_IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "Any client-chosen text; per token. The first accepted "
    "request's answer is kept for the idempotency window, with a hash of its body.",
}
_IDEMPOTENCY_KEY_REUSED = _error(
    "The `Idempotency-Key` was used within the idempotency window by an accepted "
    "request with another body (or the same bytes in the other form); nothing of "
    "this request is queued. Send it under a key of its own.",
    errors.IDEMPOTENCY_KEY_REUSED,
    _RATE_HEADERS,
)
_AI_FETCH_CHECKS = (
    f"Checks, first failure decides: rate limit, token, the path's site id (`{errors.INVALID_SITE_ID}`), body "
    f"(at most {MAX_BODY_BYTES} bytes, a JSON object, field types), status_code "
    f"(`{errors.BAD_STATUS_CODE}`), user_agent (`{errors.UNKNOWN_CRAWLER}`: any crawler hitstream knows), "
    f"hostname and path (`{errors.MISSING_PATH}`), timestamp, visitor_ip and bounds, site, "
    "`site.manage_data` grant. Exclusions and the Spamhaus DROP list are applied by the worker: such a "
    "fetch is answered 202 and not stored. Stored as a crawler hit with the verdict on `visitor_ip`."
)


def _ingest_operation(
    operation_id: str,
    summary: str,
    description: str,
    content: dict[str, Any],
    accepted: dict[str, Any],
    bad_request: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    site_statuses: bool = True,
    more_responses: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An ingest route: same security and the same error answers on every one, plus
    ``more_responses`` (the batch route reports 403 and 404 per item, inside its 202 or 400)."""
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "security": [{"bearer": []}, {"apiKey": []}],
        "requestBody": {"required": True, "content": content},
        "responses": {
            "202": accepted,
            "400": bad_request
            or _error(
                "Invalid request; the message names the field (`Bad request body` alone: not "
                "a JSON object; `Bad request body: <field> must be ...`: a field of the wrong "
                "type).",
                errors.BAD_URL,
                _RATE_HEADERS,
            ),
            "401": _error(
                "Missing, unknown, revoked or expired token.",
                errors.UNAUTHORIZED,
                _RATE_HEADERS,
            ),
            "403": _error(
                "The token lacks site.manage_data on the site, or asked for a lane "
                f"(`{LANE_HEADER}`) that is not its own.",
                errors.ACCESS_DENIED,
                _RATE_HEADERS,
            ),
            "404": _error("No site for the url's host.", errors.SITE_NOT_FOUND, _RATE_HEADERS),
            "429": _error(
                "Rate limit exceeded.",
                errors.TOO_MANY_REQUESTS,
                {**_RATE_HEADERS, **_RETRY_AFTER},
            ),
            "503": _error(
                "Redis unreachable or slow, or the request's lane is full, or the token's share of "
                "that lane (its entries still queued) is full; only that lane's or token's "
                "requests are refused.",
                errors.SERVICE_NOT_AVAILABLE,
                _RETRY_AFTER,
            ),
        },
    }
    operation["parameters"] = [_LANE_PARAMETER, *(parameters or ())]
    operation["responses"].update(more_responses or {})
    if not site_statuses:
        del operation["responses"]["404"]
        operation["responses"]["403"] = _error(
            f"The token asked for a lane (`{LANE_HEADER}`) that is not its own.",
            LIVE_TOKEN_IN_BULK,
            _RATE_HEADERS,
        )
    return operation


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "hitstream ingest API",
        "version": "1",
        "description": "HitKeep-compatible ingest of trusted server-side pageviews. A 202 means "
        "the pageview is durably queued; enrichment and storage happen asynchronously. Every "
        'error answer on every path is JSON `{"message": ...}`, including 404 for an unknown '
        "path, 405 for another method (with `Allow`) and 500.",
    },
    "paths": {
        PAGEVIEW_PATH: {
            "post": _ingest_operation(
                "ingestServerPageview",
                "Ingest one server-side pageview",
                "Checks, first failure decides: rate limit, token, body "
                f"(at most {MAX_BODY_BYTES} bytes, a JSON object, field types, UUIDs), url, "
                "timestamp, visitor_ip, user_agent, referrer/language/size bounds, site, "
                "`site.manage_data` grant, dnt. Unknown fields are ignored.",
                {"application/json": {"schema": {"$ref": "#/components/schemas/Pageview"}}},
                {
                    "description": "Accepted and queued (or dropped for dnt). Empty body.",
                    "headers": _RATE_HEADERS,
                },
            )
        },
        EVENT_PATH: {
            "post": _ingest_operation(
                "ingestServerEvent",
                "Ingest one server-side custom event",
                "A pageview body plus `name` and `properties`; the pageview's checks in its "
                "order, then name, then properties, then site, grant, dnt. Stored in the events "
                "table with the same enrichment, exclusions and spam rules.",
                {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}},
                {
                    "description": "Accepted and queued (or dropped for dnt). Empty body.",
                    "headers": _RATE_HEADERS,
                },
            )
        },
        BATCH_PATH: {
            "post": _ingest_operation(
                "ingestServerPageviews",
                "Ingest up to 1000 server-side pageviews",
                f"A JSON array, or NDJSON with `Content-Type: {NDJSON}`, of at most "
                f"{MAX_BATCH_ITEMS} pageview bodies and {MAX_BATCH_BYTES} bytes. Whole-request "
                'checks (rate limit, token, size, form, item count) answer with `{"message"}`; '
                "then each item gets the single endpoint's checks and messages. Valid items are "
                "queued together. The rate limit counts items; a batch larger than the burst "
                "needs a full bucket. With `Idempotency-Key` a repeat of the same request (same "
                "body bytes and form) within the idempotency window gets the first answer back and "
                "queues nothing; another body under the same key gets 422 and queues nothing.",
                {
                    "application/json": {
                        "schema": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Pageview"},
                        }
                    },
                    NDJSON: {
                        "schema": {
                            "type": "string",
                            "description": "One pageview body per line.",
                        }
                    },
                },
                _batch_answer("Accepted: the items not listed in `rejected` are queued."),
                bad_request=_batch_answer(
                    f"No item was accepted (same body), or the request itself is invalid "
                    f'(`{{"message"}}`, e.g. `{TOO_MANY}`).'
                ),
                parameters=[_IDEMPOTENCY_KEY_PARAMETER],
                site_statuses=False,
                more_responses={"422": _IDEMPOTENCY_KEY_REUSED},
            )
        },
        AI_FETCH_PATH: {
            "post": _ingest_operation(
                "ingestAiFetch",
                "Ingest one crawler request an edge or origin server saw (HitKeep's AI-fetch endpoint)",
                _AI_FETCH_CHECKS,
                {"application/json": {"schema": {"$ref": "#/components/schemas/AiFetch"}}},
                {"description": "Accepted and queued. Empty body.", "headers": _RATE_HEADERS},
                bad_request=_error(
                    f"Invalid request: `{errors.INVALID_SITE_ID}`, `{errors.BAD_BODY}` (not a JSON object, over "
                    f"{MAX_BODY_BYTES} bytes) or `Bad request body: <field> must be ...`, "
                    f"`{errors.BAD_STATUS_CODE}`, `{errors.UNKNOWN_CRAWLER}`, `{errors.MISSING_PATH}`, or a "
                    "message naming another field.",
                    errors.UNKNOWN_CRAWLER,
                    _RATE_HEADERS,
                ),
                parameters=[_SITE_ID_PARAMETER],
                more_responses={"404": _error("No site with the path's id.", errors.SITE_NOT_FOUND, _RATE_HEADERS)},
            )
        },
        AI_FETCH_BATCH_PATH: {
            "post": _ingest_operation(
                "ingestAiFetches",
                "Ingest up to 1000 crawler requests (ours)",
                f"A JSON array, or NDJSON with `Content-Type: {NDJSON}`, of at most {MAX_BATCH_ITEMS} AI-fetch "
                f"bodies and {MAX_BATCH_BYTES} bytes, for the site in the path (`{errors.INVALID_SITE_ID}` "
                "refuses the request whole). Answered as the pageview batch; each item gets the single "
                f"route's checks and messages. {_AI_FETCH_CHECKS}",
                {
                    "application/json": {
                        "schema": {"type": "array", "items": {"$ref": "#/components/schemas/AiFetch"}}
                    },
                    NDJSON: {"schema": {"type": "string", "description": "One AI-fetch body per line."}},
                },
                _batch_answer("Accepted: the items not listed in `rejected` are queued."),
                bad_request=_batch_answer(
                    "No item was accepted (same body), or the request itself is invalid "
                    f'(`{{"message"}}`, e.g. `{errors.INVALID_SITE_ID}`).'
                ),
                parameters=[_SITE_ID_PARAMETER, _IDEMPOTENCY_KEY_PARAMETER],
                site_statuses=False,
                more_responses={"422": _IDEMPOTENCY_KEY_REUSED},
            )
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "The process is alive",
                "security": [],
                "responses": {"200": _text("Alive.", "text/plain")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "ready",
                "summary": "Redis answers",
                "security": [],
                "responses": {
                    "200": _text("Ready.", "text/plain"),
                    "503": _error("Redis does not answer.", errors.REDIS_NOT_READY),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics of this process",
                "security": [],
                "responses": {"200": _text("Prometheus text format.", "text/plain")},
            }
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token (wins over X-Api-Key).",
            },
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
        },
        "schemas": {
            "Pageview": body_schema(PAGEVIEW_BODY, _KEYS),
            "Event": body_schema(EVENT_BODY, _KEYS + " Keys inside `properties` are data, kept as sent."),
            "AiFetch": body_schema(AI_FETCH_BODY, _KEYS),
            "BatchAnswer": _BATCH_ANSWER,
            "Error": {
                "type": "object",
                "required": ["message"],
                "properties": {"message": {"type": "string"}},
            },
        },
    },
}

# Any route: uvicorn itself sets no header limit, ingest_api.front does.
_HEADERS_TOO_LARGE = _error(
    f"The request's headers (names and values) exceed {MAX_HEADER_BYTES} bytes in total.",
    errors.HEADERS_TOO_LARGE,
)
for _operations in DOCUMENT["paths"].values():
    for _operation in _operations.values():
        _operation["responses"]["431"] = _HEADERS_TOO_LARGE
