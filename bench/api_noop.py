"""The benchmark's baseline: a Starlette app that answers 202 and does nothing else.

Served by the same uvicorn stack as the real API (one worker, uvloop, httptools), so the
ratio in bench/api_bench.py measures only what the ingest endpoint itself costs.
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def accept(request: Request) -> Response:
    await request.body()
    return Response(status_code=202)


app = Starlette(routes=[Route("/noop", accept, methods=["POST"])])
