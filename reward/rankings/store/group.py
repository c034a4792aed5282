"""Group commit for SQLite: write transactions of many threads share one transaction and one fsync.

SQLite has one writer at a time, and with `synchronous=FULL` every commit waits for an fsync of the
WAL (milliseconds on a real disk): one commit per ranking caps a server at a few hundred rankings a
second however fast the rest is. Here each unit of work runs in its own SAVEPOINT inside a shared
write transaction, one after another, and the last unit of a batch (no other thread is queued to
join it) commits for all of them; everyone who arrives during that fsync forms the next batch. A
unit returns only after the commit that contains it (so an acknowledged ranking is as durable as
before), a unit that raises is rolled back to its savepoint without touching the others, and a
failed commit is raised in every unit of its batch (clients retry with their idempotency keys).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine


class GroupCommit:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.cond = threading.Condition(threading.Lock())
        self.conn: Connection | None = None
        self.batch = 0
        self.waiting = 0
        self.committing = False
        self.outcome: dict[int, BaseException | None] = {}

    @contextmanager
    def unit(self) -> Iterator[Connection]:
        """A connection inside this unit's savepoint of the shared transaction; exits after the group commit."""
        with self.cond:
            self.waiting += 1
            while self.committing:
                self.cond.wait()
            self.waiting -= 1
            if self.conn is None:
                self.conn = self.engine.connect()
                self.conn.execution_options(write=True, durable=True)
                self.conn.begin()
            batch = self.batch
            savepoint = self.conn.begin_nested()
            failed: BaseException | None = None
            try:
                yield self.conn
                savepoint.commit()
            except BaseException as e:
                failed = e
                if savepoint.is_active:
                    savepoint.rollback()
            outcome = self._finish(batch)
        if failed is not None:
            raise failed
        if outcome is not None:
            raise outcome

    def _finish(self, batch: int) -> BaseException | None:
        """Commit the batch if nobody else is queued to join it, else wait for whoever does; its outcome."""
        if self.waiting == 0 and not self.committing:
            self.committing = True
            conn, self.conn = self.conn, None
            self.cond.release()  # let the next batch queue up during the fsync
            error = None
            try:
                conn.commit()
            except BaseException as e:  # surfaced in every unit of the batch
                error = e
                conn.rollback()
            finally:
                conn.close()
                self.cond.acquire()
            self.outcome[batch] = error
            self.outcome.pop(batch - 64, None)
            self.batch += 1
            self.committing = False
            self.cond.notify_all()
            return error
        while batch == self.batch:
            self.cond.wait()
        return self.outcome.get(batch)
