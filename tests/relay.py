"""A TCP relay on a replication link that can stop delivering the primary's stream: a replica
that lags for real.

Freezing a replica (SIGSTOP) is not lag: the kernel keeps buffering the stream and the thawed
replica reads all of it. Here the replica's ``replicaof`` names the relay and the relay
connects to the primary. After ``hold()`` the relay keeps reading what the primary sends and
delivers none of it (counted in ``held_bytes``, never released), while the replica's own
traffic still reaches the primary: its REPLCONF ACK every second, with an offset that no
longer moves. So the primary counts the replica as connected, online and acknowledging
(``connected_slaves``, ``lag``, ``min-replicas-to-write`` all satisfied) while ``WAIT`` counts
it out: a link that delivers nothing downstream, as a congested or half-broken network does.
When the primary's side closes (the primary died) the relay closes the replica's side: what
it held is never delivered, as a network loses what it had in flight.

Loopback only: it listens on 127.0.0.1 and connects to 127.0.0.1. Bounded: nothing held is
kept in memory (there is no release), a read takes at most ``CHUNK_BYTES``, connecting to
the primary gives up after ``CONNECT_SECONDS``, and ``close`` ends every connection. Its
event loop runs in a thread of its own, so a synchronous test drives it.
"""

from __future__ import annotations

import asyncio
import threading

LOOPBACK = "127.0.0.1"
CHUNK_BYTES = 64 * 1024
CONNECT_SECONDS = 5.0


class Relay:
    """Forwards connections on ``port`` to ``target_port``, both on 127.0.0.1."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._holding = threading.Event()
        self._held_bytes = 0  # written by the relay's thread only
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay", daemon=True)
        self._thread.start()
        listening = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._relay, LOOPBACK, 0), self._loop)
        self._server = listening.result(CONNECT_SECONDS)
        self.port: int = self._server.sockets[0].getsockname()[1]

    def hold(self) -> None:
        """From now on, deliver nothing the primary sends (anything it sends after this call
        is held; what was read before may still be on its way)."""
        self._holding.set()

    @property
    def held_bytes(self) -> int:
        """Bytes the primary sent that the replica never got."""
        return self._held_bytes

    def close(self) -> None:
        async def shut_down() -> None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            # Each connection's tasks end once their reads see the aborted sockets.
            others = asyncio.all_tasks() - {asyncio.current_task()}
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut_down(), self._loop).result(CONNECT_SECONDS)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CONNECT_SECONDS)
        self._loop.close()

    async def _relay(self, replica_reader: asyncio.StreamReader, replica_writer: asyncio.StreamWriter) -> None:
        self._writers.add(replica_writer)
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                primary_reader, primary_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except (OSError, TimeoutError):  # the primary is gone: so is this link
            replica_writer.transport.abort()
            self._writers.discard(replica_writer)
            return
        self._writers.add(primary_writer)
        upstream = asyncio.ensure_future(self._forward(replica_reader, primary_writer))
        try:
            await self._downstream(primary_reader, replica_writer)
        finally:
            upstream.cancel()
            for writer in (replica_writer, primary_writer):
                writer.transport.abort()  # at once: nothing queued for the replica goes out later
                self._writers.discard(writer)

    async def _downstream(self, primary: asyncio.StreamReader, replica: asyncio.StreamWriter) -> None:
        """Primary to replica, until either side closes; held data is only counted."""
        try:
            while data := await primary.read(CHUNK_BYTES):
                if self._holding.is_set():
                    self._held_bytes += len(data)
                else:
                    replica.write(data)
                    await replica.drain()
        except ConnectionError:  # reset: closed all the same
            pass

    @staticmethod
    async def _forward(replica: asyncio.StreamReader, primary: asyncio.StreamWriter) -> None:
        """Replica to primary, always (its ACKs keep the primary believing it is in time),
        until either side closes."""
        try:
            while data := await replica.read(CHUNK_BYTES):
                primary.write(data)
                await primary.drain()
        except ConnectionError:
            pass
        primary.transport.abort()  # ends the downstream side too
