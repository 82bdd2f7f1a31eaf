"""``Client`` (sender in a background thread) and ``AsyncClient`` (sender in the
application's event loop): the same hot path, a different home for the sender.

``send_pageview`` / ``send_event`` build the body's fields, put them in the queue and return
the item's id (page_id / event_id: pass a pageview's page_id to the events of that page).
They never block and never raise for the network; the sender is started on first use.
Both clients deliver what is left when the interpreter exits (atexit, within
``Options.close_timeout``); ``close`` / ``aclose`` do it earlier.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable
from datetime import datetime

from hitstream.client.items import PropertyValue, event_fields, pageview_fields
from hitstream.client.options import Options
from hitstream.client.queue import Item, ItemQueue
from hitstream.client.sender import Sender
from hitstream.client.stats import Stats

log = logging.getLogger("hitstream.client")


class _Producer:
    """The application's side: fields, queue, counters. Subclasses start and wake the sender."""

    def __init__(self, url: str, token: str, options: Options | None) -> None:
        self.url = url
        self._token = token
        self.options = options or Options()
        self.stats = Stats()
        self._queue = ItemQueue(self.options.max_queue, self.stats)
        self._sender: Sender | None = None
        self._closed = False
        # A strong reference: a client the application dropped still delivers at exit.
        # close() / aclose() unregister it.
        atexit.register(self._deliver_at_exit)

    def send_pageview(
        self,
        url: str,
        visitor_ip: str,
        user_agent: str,
        *,
        referrer: str | None = None,
        language: str | None = None,
        timestamp: datetime | str | None = None,
        page_id: str | None = None,
        session_id: str | None = None,
        screen_width: int | None = None,
        screen_height: int | None = None,
        viewport_width: int | None = None,
        viewport_height: int | None = None,
        dnt: bool | None = None,
    ) -> str:
        """Queue a pageview; its page_id (a new uuid4 unless given)."""
        fields = pageview_fields(
            url,
            visitor_ip,
            user_agent,
            timestamp=timestamp,
            page_id=page_id,
            optional={
                "referrer": referrer,
                "language": language,
                "session_id": session_id,
                "screen_width": screen_width,
                "screen_height": screen_height,
                "viewport_width": viewport_width,
                "viewport_height": viewport_height,
                "dnt": dnt,
            },
        )
        self._put(Item(fields, event=False))
        return fields["page_id"]

    def send_event(
        self,
        name: str,
        url: str,
        visitor_ip: str,
        user_agent: str,
        *,
        properties: dict[str, PropertyValue] | None = None,
        event_id: str | None = None,
        page_id: str | None = None,
        referrer: str | None = None,
        language: str | None = None,
        timestamp: datetime | str | None = None,
        session_id: str | None = None,
    ) -> str:
        """Queue an event; its event_id (a new uuid4 unless given)."""
        fields = pageview_fields(
            url,
            visitor_ip,
            user_agent,
            timestamp=timestamp,
            page_id=page_id,
            optional={"referrer": referrer, "language": language, "session_id": session_id},
        )
        fields = event_fields(name, fields, properties, event_id)
        self._put(Item(fields, event=True))
        return fields["event_id"]

    def _put(self, item: Item) -> None:
        if self._closed:
            self.stats.queued += 1
            self.stats.dropped_at_close += 1
            return
        if self._queue.put(item, self.options.batch_items) or self._sender is None:
            try:
                self._wake()
            except Exception:  # the application must never see the client fail
                log.exception("hitstream client: could not wake the sender")

    def _new_sender(self) -> Sender:
        return Sender(self.url, self._token, self._queue, self.stats, self.options)

    def _wake(self) -> None:
        raise NotImplementedError

    def _deliver_at_exit(self) -> None:
        try:
            self._close_at_exit()
        except Exception:
            log.exception("hitstream client: delivering at exit failed")

    def _mark_closed(self) -> None:
        self._closed = True
        atexit.unregister(self._deliver_at_exit)

    def _close_at_exit(self) -> None:
        raise NotImplementedError


class Client(_Producer):
    """For code in any thread (WSGI apps, scripts, workers): the sender runs in a daemon
    thread with its own event loop, started on first use and again in a forked child."""

    def __init__(self, url: str, token: str, options: Options | None = None) -> None:
        super().__init__(url, token, options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        os.register_at_fork(after_in_child=_forget_thread_in_child(weakref.ref(self)))

    def flush(self, timeout: float = 10.0) -> bool:
        """Post everything queued and wait; True when nothing is left queued or in flight
        within ``timeout`` (each item delivered, rejected or dropped: see ``stats``)."""
        sender, loop = self._running_sender()
        if sender is None or loop is None:
            return len(self._queue) == 0
        try:
            return asyncio.run_coroutine_threadsafe(sender.flush(timeout), loop).result(timeout + 1)
        except Exception:
            log.exception("hitstream client: flush failed")
            return False

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued within ``timeout`` (Options.close_timeout), drop and count the
        rest, stop the thread. Items sent later are counted as dropped_at_close."""
        if self._closed:
            return
        self._mark_closed()
        timeout = self.options.close_timeout if timeout is None else timeout
        if self._sender is None or self._loop is None or self._thread is None:
            self.stats.dropped_at_close += self._queue.discard()
            return
        try:
            asyncio.run_coroutine_threadsafe(self._sender.close(timeout), self._loop).result(timeout + 5)
        except Exception:
            log.exception("hitstream client: close failed")
        self._thread.join(5)

    def _running_sender(self) -> tuple[Sender | None, asyncio.AbstractEventLoop | None]:
        if self._sender is None and not self._closed:
            self._wake()
        return self._sender, self._loop

    def _wake(self) -> None:
        if self._sender is None:
            with self._start_lock:
                if self._sender is None:
                    self._start()
                    return
        assert self._loop is not None and self._sender is not None
        self._loop.call_soon_threadsafe(self._sender.wake)

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        sender = self._new_sender()
        thread = threading.Thread(target=_serve, args=(loop, sender), name="hitstream-client", daemon=True)
        thread.start()
        self._loop, self._thread, self._sender = loop, thread, sender

    def _forget_thread(self) -> None:
        """In a forked child: the parent's thread did not come along, and the parent delivers
        the items queued before the fork."""
        self._queue.reset_lock()
        self._queue.discard()
        self._start_lock = threading.Lock()
        self._loop = self._thread = self._sender = None

    def _close_at_exit(self) -> None:
        self.close()


class AsyncClient(_Producer):
    """For asyncio applications (ASGI apps): the sender is a task in the application's loop,
    started by the first send in that loop, or by ``start`` / ``async with``. ``send_*`` may be
    called from other threads too. Call ``aclose`` before the loop ends (the ASGI middleware
    does on lifespan shutdown); what is left at exit is delivered in a loop of its own."""

    def __init__(self, url: str, token: str, options: Options | None = None) -> None:
        super().__init__(url, token, options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the sender in the running loop (no-op when started)."""
        if self._sender is None and not self._closed:
            self._start(asyncio.get_running_loop())

    async def flush(self, timeout: float = 10.0) -> bool:
        """Post everything queued and wait; True when nothing is left queued or in flight
        within ``timeout`` (each item delivered, rejected or dropped: see ``stats``)."""
        self.start()
        if self._sender is None:
            return len(self._queue) == 0
        return await self._sender.flush(timeout)

    async def aclose(self, timeout: float | None = None) -> None:
        """Deliver what is queued within ``timeout`` (Options.close_timeout), drop and count the
        rest, stop the sender. Items sent later are counted as dropped_at_close."""
        if self._closed:
            return
        self.start()
        self._mark_closed()
        assert self._sender is not None and self._task is not None
        await self._sender.close(self.options.close_timeout if timeout is None else timeout)
        await self._task

    def _wake(self) -> None:
        if self._sender is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # not in a loop: the item waits for start(), flush() or the exit handler
            self._start(loop)
        assert self._loop is not None and self._sender is not None
        if threading.get_ident() == self._loop_thread:
            self._sender.wake()
        else:
            self._loop.call_soon_threadsafe(self._sender.wake)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._sender = self._new_sender()
        self._task = loop.create_task(self._sender.run(), name="hitstream-client")

    def _close_at_exit(self) -> None:
        """The application's loop is gone by now: deliver the rest from a loop of our own."""
        if self._closed:
            return
        if self._loop is not None and self._loop.is_running():
            log.warning("hitstream client: the event loop still runs at exit; call aclose() before it ends")
            return
        self._mark_closed()
        if len(self._queue) == 0:
            return
        sender = self._new_sender()

        async def deliver() -> None:
            await sender.close(self.options.close_timeout)

        asyncio.run(deliver())


def _serve(loop: asyncio.AbstractEventLoop, sender: Sender) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(sender.run())
    finally:
        loop.close()


def _forget_thread_in_child(reference: weakref.ref[Client]) -> Callable[[], None]:
    def forget() -> None:
        client = reference()
        if client is not None:
            client._forget_thread()

    return forget
