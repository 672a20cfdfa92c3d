"""WAL checkpoints of a long run, taken on a thread of their own.

By default SQLite checkpoints inside the COMMIT that grows the WAL past 1,000 pages:
the committing thread copies the batch's pages into the database file and waits for
two fsyncs. A replay's batch is tens of MB (transitions, alerts, project states), so
the engine sat in that I/O wait — ~0.8 s of a 10k-project year — instead of folding
the next events. A run that commits more than once hands checkpoints over to this
thread before its first commit: the writer's automatic checkpoints are off, and after
each commit the thread checkpoints (PASSIVE: it never blocks the writer or a reader)
while the engine goes on; the run ends with its last checkpoint done and SQLite's
default restored. A run of one commit — `serve` applying an HTTP batch — starts no
thread and checkpoints as before. Durability is unchanged: a commit is in the WAL
before the engine goes on, and a crash mid-checkpoint is recovered by SQLite from
the WAL.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from types import TracebackType

log = logging.getLogger(__name__)

DEFAULT_AUTOCHECKPOINT = 1000  # pages, SQLite's own default


class Checkpointer:
    """``with Checkpointer(writer, path) as c:`` — ``c.take_over()`` before a commit that
    more will follow, ``c.poke()`` after it (``c.settle()`` to wait for that checkpoint);
    leaving the block checkpoints the rest."""

    def __init__(self, writer: sqlite3.Connection, path: str) -> None:
        self.writer = writer
        self.path = path
        self.checkpoints = 0  # completed, for tests and logs
        self._wake = threading.Event()
        self._stopping = False
        # Pokes so far, and how many of them a finished checkpoint covers (settle).
        self._poked = 0
        self._settled = 0
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Checkpointer:
        return self

    def take_over(self) -> None:
        """Checkpoint on the thread from now on (idempotent)."""
        if self._thread is not None or self._stopping or self.path in ("", ":memory:"):
            return  # a private in-memory database has no WAL and no second connection
        self.writer.execute("PRAGMA wal_autocheckpoint=0")
        self._thread = threading.Thread(target=self._loop, name="budgetwatch-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A commit landed: checkpoint it when the thread is free."""
        with self._done:
            self._poked += 1
        self._wake.set()

    def settle(self) -> None:
        """Wait until every commit poked so far has been checkpointed (or tried).

        SQLite starts the WAL over only when a write transaction begins with every
        committed frame copied into the database file; a run that opens its next batch
        at once never lets it, and its WAL grows by a batch per commit (2.1 GB for a
        100k-project year), each page lookup searching more of it. Settled before
        the next batch begins, the WAL is reused from its start."""
        thread = self._thread
        if thread is None:
            return
        with self._done:
            while self._settled < self._poked and thread.is_alive():
                self._done.wait(0.1)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stopping = True
        if self._thread is None:
            return
        self._wake.set()
        self._thread.join()
        self._thread = None
        self.writer.execute(f"PRAGMA wal_autocheckpoint={DEFAULT_AUTOCHECKPOINT}")

    def _loop(self) -> None:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:  # the writer's next autocheckpoint or close does the work
            log.warning("%s: cannot open a connection for WAL checkpoints (%s); "
                        "SQLite will checkpoint when the run ends", self.path, err)
            return
        try:
            connection.execute("PRAGMA busy_timeout=30000")
            while True:
                self._wake.wait()
                self._wake.clear()
                stopping = self._stopping  # read before the checkpoint: a last poke is not lost
                with self._done:
                    covered = self._poked  # committed before this checkpoint starts
                self._checkpoint(connection)
                with self._done:
                    self._settled = covered
                    self._done.notify_all()
                if stopping:
                    return
        finally:
            connection.close()

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as err:
            # Only the copy into the database file is late: every commit is in the WAL.
            log.warning("%s: WAL checkpoint failed (%s); the next one will copy these pages", self.path, err)
