"""Drives one replay: reads results in file order, skips lines the journal holds as done,
sends the rest through ``concurrency`` workers, and records every final answer.

Order of writes for each finished line: rejects file entry, then tally and journal in memory;
the state file is saved at most every SAVE_INTERVAL seconds, after flushing the rejects file.
A kill therefore loses at most that interval of journal: those lines are sent again with the
same page_id (the server deduplicates retried page_ids) and rejected ones are written again
(the rejects file is trimmed to the journal on resume).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from tqdm import tqdm

from hitstream.replay.inputfile import page_id_for
from hitstream.replay.journal import Journal
from hitstream.replay.records import Malformed, ReadResult, Sendable, Skipped
from hitstream.replay.rejects import RejectsFile
from hitstream.replay.sender import Answer, Batch, Sender
from hitstream.replay.tally import Tally

SAVE_INTERVAL = 0.2


class Replayer:
    def __init__(
        self,
        *,
        identity: str,
        journal: Journal,
        tally: Tally,
        rejects: RejectsFile,
        sender: Sender,
        save: Callable[[], None],
        progress: tqdm[Any],
        concurrency: int,
        batch_size: int,
    ) -> None:
        self._identity = identity
        self._journal = journal
        self._tally = tally
        self._rejects = rejects
        self._sender = sender
        self._save = save
        self._progress = progress
        self._concurrency = concurrency
        self._batch_size = batch_size
        self._last_save = time.monotonic()
        self.sent = 0

    async def run(self, results: Iterable[ReadResult]) -> None:
        """Replay everything; the state is saved on every way out (finished, failed, cancelled)."""
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=self._concurrency)
        try:
            async with asyncio.TaskGroup() as workers:
                for _ in range(self._concurrency):
                    workers.create_task(self._work(queue))
                await self._produce(results, queue)
                for _ in range(self._concurrency):
                    await queue.put(None)
        finally:
            self.save()

    def save(self) -> None:
        self._rejects.flush()
        self._save()
        self._last_save = time.monotonic()

    async def _produce(self, results: Iterable[ReadResult], queue: asyncio.Queue[Batch | None]) -> None:
        batch = Batch()
        for result in results:
            if self._journal.is_done(result.line):
                self._tally.already_done += 1
                self._progress.update()
                continue
            if isinstance(result, Sendable):
                body = orjson.dumps(self._with_page_id(result))
                if batch.bodies and not batch.fits(body, self._batch_size):
                    await queue.put(batch)
                    batch = Batch()
                self._journal.start(result.line)
                batch.add(result.line, body)
                continue
            self._journal.start(result.line)
            if isinstance(result, Malformed):
                self._rejects.write(result.line, None, result.reason)
                self._tally.rejected[None, result.reason] += 1
            elif isinstance(result, Skipped):
                self._tally.skipped[result.reason] += 1
            self._journal.finish(result.line)
            self._progress.update()
        if batch.bodies:
            await queue.put(batch)

    def _with_page_id(self, sendable: Sendable) -> dict[str, Any]:
        if sendable.body.get("page_id"):
            return sendable.body
        return {**sendable.body, "page_id": page_id_for(self._identity, sendable.line)}

    async def _work(self, queue: asyncio.Queue[Batch | None]) -> None:
        while (batch := await queue.get()) is not None:
            self._record(await self._sender.send(batch))

    def _record(self, answers: list[Answer]) -> None:
        for answer in answers:
            if answer.accepted:
                self._tally.accepted += 1
            else:
                self._rejects.write(answer.line, answer.status, answer.message)
                self._tally.rejected[answer.status, answer.message] += 1
            self._journal.finish(answer.line)
        self.sent += len(answers)
        self._progress.update(len(answers))
        if time.monotonic() - self._last_save >= SAVE_INTERVAL:
            self.save()
