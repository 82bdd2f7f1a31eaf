"""CPU per request of uvicorn's httptools protocol with and without the connection guard
(ingest_api.connections), in process: one protocol object, a fake transport, keep-alive
requests fed one after another to a no-op ASGI app, on uvloop.

    .venv/bin/python -m bench.guard_bench [--requests 20000] [--rounds 7]

Rounds alternate plain / guarded; the best round of each is compared (the machine's speed
drifts, the best round is the least disturbed). Run it from another checkout
(``env -C DIR python -m bench.guard_bench``) to measure that checkout's guard.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ingest_api.connections import GuardedHttpTools

REQUEST = (
    b"POST /api/ingest/server/pageview HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAuthorization: Bearer "
    + b"a" * 64
    + b"\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n0123456789"
)


async def noop_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


class Transport(asyncio.Transport):
    """Accepts every write and forgets it."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def cpu_us_per_request(protocol_class: type[HttpToolsProtocol], requests: int) -> float:
    config = uvicorn.Config(app=noop_app, http=protocol_class, loop="none", lifespan="off", log_level="error")
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    protocol.connection_made(Transport())
    for _ in range(1000):  # warm-up
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)
    started = time.process_time()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the request's task answers
    return (time.process_time() - started) / requests * 1e6


async def main(requests: int, rounds: int) -> None:
    results: dict[str, list[float]] = {"uvicorn httptools": [], "guarded": []}
    for _ in range(rounds):
        results["uvicorn httptools"].append(await cpu_us_per_request(HttpToolsProtocol, requests))
        results["guarded"].append(await cpu_us_per_request(GuardedHttpTools, requests))
    for name, values in results.items():
        print(f"{name:<18} us/request per round: {' '.join(f'{v:.2f}' for v in values)}; best {min(values):.2f}")
    extra = min(results["guarded"]) - min(results["uvicorn httptools"])
    print(f"the guard's cost: {extra:+.2f} us per request (best against best)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    uvloop.run(main(args.requests, args.rounds))
