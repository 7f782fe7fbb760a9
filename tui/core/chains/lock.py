"""One backup, prune or restore per VM at a time, whoever starts it (a schedule, a shell, the
console): each takes the connection's run lock for as long as it lasts.

The lock is a ledger row (who, host, pid, since when, last heartbeat). A holder whose process is
gone (same host, no such pid) or that has not beaten for :data:`STALE_AFTER` seconds is dead: its
lock is taken over, with a line saying so. Another live holder means: wait up to ``wait`` seconds,
then refuse with one line naming it.

:class:`RunLocks` is the whole interface the runs use (acquire, heartbeat, release, holder), so a
database with advisory locks can stand in for the SQLite rows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Protocol

from tui.core.base.errors import RefusedError
from tui.core.base.text import shown
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import RunLockRow

log = logging.getLogger(__name__)

# A live holder beats this often; one silent for STALE_AFTER seconds is taken to be dead.
HEARTBEAT_EVERY = 5.0
STALE_AFTER = 60.0
# How often a waiting run looks again.
_POLL = 0.5


class RunLocks(Protocol):
    """The run locks of one ledger."""

    def acquire(self, connection: str, activity: str, holder: str) -> tuple[bool, RunLockRow | None]:
        """(True, None): taken; (True, dead): taken over from ``dead``; (False, live): held."""

    def heartbeat(self, connection: str) -> bool:
        """Still running; False when the lock was taken from this process."""

    def release(self, connection: str) -> None:
        """Done (only this process's lock is let go)."""

    def holder(self, connection: str) -> RunLockRow | None:
        """Who holds it now, if anyone."""


class LedgerRunLocks:
    """:class:`RunLocks` over the SQLite ledger's ``run_locks`` rows."""

    def __init__(self, ledger: Ledger, stale_after: float = STALE_AFTER) -> None:
        self.ledger = ledger
        self.stale_after = stale_after

    def acquire(self, connection: str, activity: str, holder: str) -> tuple[bool, RunLockRow | None]:
        return self.ledger.take_run_lock(connection, activity, holder, stale_after=self.stale_after)

    def heartbeat(self, connection: str) -> bool:
        return self.ledger.beat_run_lock(connection)

    def release(self, connection: str) -> None:
        self.ledger.drop_run_lock(connection)

    def holder(self, connection: str) -> RunLockRow | None:
        return self.ledger.run_lock(connection)


def busy_line(lock: RunLockRow) -> str:
    """``vm1 is being backed up by policy nightly, started 02:00:03 by pid 1234 on host-a``."""
    started = time.strftime("%H:%M:%S", time.localtime(lock.started))
    return (f"{shown(lock.connection)} is being {lock.activity} by {shown(lock.holder)}, started "
            f"{started} by pid {lock.pid} on {shown(lock.host)}")


def takeover_line(dead: RunLockRow, stale_after: float) -> str:
    """The line saying a dead holder's lock was taken over, and why it counts as dead."""
    silent = time.time() - dead.heartbeat
    why = (f"no heartbeat for {silent:.0f} s" if silent > stale_after
           else "that process is gone")
    return (f"took over {shown(dead.connection)}'s run lock from {shown(dead.holder)} "
            f"(pid {dead.pid} on {shown(dead.host)}: {why})")


def _attempt(locks: RunLocks, connection: str, activity: str, holder: str, deadline: float,
             on_note: Callable[[str], None] | None, stale_after: float = STALE_AFTER) -> bool:
    """One try at the lock: True when taken; False to try again; a :class:`RefusedError`
    naming the live holder once ``deadline`` (monotonic) passed."""
    taken, other = locks.acquire(connection, activity, holder)
    if taken:
        if other is not None:
            line = takeover_line(other, stale_after)
            log.warning("%s", line)
            if on_note is not None:
                on_note(line)
        return True
    assert other is not None
    if time.monotonic() >= deadline:
        raise RefusedError(busy_line(other))
    return False


@contextmanager
def run_lock(ledger: Ledger, connection: str, activity: str, holder: str, *, wait: float = 0.0,
             on_note: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``connection``'s run lock while the block runs, waiting up to ``wait`` seconds for a
    live holder to finish first; released when the block ends, however it ends."""
    deadline = time.monotonic() + wait
    while not _attempt(LedgerRunLocks(ledger), connection, activity, holder, deadline, on_note):
        time.sleep(_POLL)
    with _beating(ledger, connection):
        yield


@asynccontextmanager
async def run_lock_async(ledger: Ledger, connection: str, activity: str, holder: str, *,
                         wait: float = 0.0, on_note: Callable[[str], None] | None = None
                         ) -> AsyncIterator[None]:
    """:func:`run_lock` for a coroutine: the wait does not block the event loop."""
    deadline = time.monotonic() + wait
    # Polling: the holder may be another process, which no event of ours can tell about.
    while not _attempt(LedgerRunLocks(ledger), connection, activity, holder, deadline, on_note):  # noqa: ASYNC110
        await asyncio.sleep(_POLL)
    with _beating(ledger, connection):
        yield


@contextmanager
def _beating(ledger: Ledger, connection: str) -> Iterator[None]:
    """Heartbeat in a background thread (over its own ledger connection) while the block runs;
    then release the lock."""
    done = threading.Event()
    beat = threading.Thread(target=_beat, args=(os.fspath(ledger.path), connection, done),
                            name=f"run-lock {connection}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        done.set()
        beat.join()
        LedgerRunLocks(ledger).release(connection)


def _beat(path: str, connection: str, done: threading.Event) -> None:
    """Beat every :data:`HEARTBEAT_EVERY` seconds until ``done``."""
    with Ledger(path) as own:
        locks = LedgerRunLocks(own)
        while not done.wait(HEARTBEAT_EVERY):
            if not locks.heartbeat(connection):
                log.warning("%s: the run lock was taken over while this run went on",
                            shown(connection))
                return
