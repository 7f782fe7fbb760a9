"""The run lock's rules on a real ledger file: one holder per connection, a dead holder taken over
(gone process, silent heartbeat), a live one named in the refusal, the wait, an older ledger."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time

import pytest

from tui.core.base.errors import RefusedError
from tui.core.chains.lock import (
    HEARTBEAT_EVERY,
    STALE_AFTER,
    LedgerRunLocks,
    busy_line,
    run_lock,
)
from tui.core.ledger.repository import Ledger


def plant(path, *, host: str, pid: int, heartbeat_age: float) -> None:
    """A lock row written the way another process's run would have left it."""
    now = time.time()
    with sqlite3.connect(path) as db:
        db.execute("INSERT OR REPLACE INTO run_locks VALUES (?, ?, ?, ?, ?, ?, ?)",
                   ("vm1", "backed up", "policy nightly", host, pid, now - 600, now - heartbeat_age))


def test_one_holder_then_released(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger, Ledger(path) as other:
        with run_lock(ledger, "vm1", "backed up", "policy nightly"):
            held = LedgerRunLocks(other).holder("vm1")
            assert held is not None and held.pid == os.getpid()
            assert held.host == socket.gethostname() and held.holder == "policy nightly"
            with pytest.raises(RefusedError) as refused:
                with run_lock(other, "vm1", "pruned", "policy nightly"):
                    raise AssertionError("a second run got the lock")
            assert str(refused.value).startswith("vm1 is being backed up by policy nightly, started ")
            assert str(refused.value).endswith(f" by pid {os.getpid()} on {socket.gethostname()}")
            # Another VM's lock is its own.
            with run_lock(other, "vm2", "backed up", "policy nightly"):
                pass
        assert LedgerRunLocks(other).holder("vm1") is None


def test_wait_then_run(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as first, Ledger(path) as second:
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with Ledger(path) as own, run_lock(own, "vm1", "backed up", "policy nightly"):
                holding.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert holding.wait(10)
        start = time.monotonic()
        with pytest.raises(RefusedError):
            with run_lock(first, "vm1", "backed up", "policy weekly", wait=0.6):
                pass
        assert time.monotonic() - start >= 0.6
        threading.Timer(0.5, release.set).start()
        with run_lock(second, "vm1", "backed up", "policy weekly", wait=10):
            assert LedgerRunLocks(first).holder("vm1").holder == "policy weekly"
        holder.join()


def test_dead_holders_are_taken_over_with_a_line(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        gone = os.fork()
        if gone == 0:
            os._exit(0)
        os.waitpid(gone, 0)
        plant(path, host=socket.gethostname(), pid=gone, heartbeat_age=1)
        notes: list[str] = []
        with run_lock(ledger, "vm1", "backed up", "policy weekly", on_note=notes.append):
            pass
        assert notes == [f"took over vm1's run lock from policy nightly (pid {gone} on "
                         f"{socket.gethostname()}: that process is gone)"]

        # Another host's process cannot be looked at: only its silence counts.
        plant(path, host="host-b", pid=1234, heartbeat_age=STALE_AFTER + 30)
        notes.clear()
        with run_lock(ledger, "vm1", "backed up", "policy weekly", on_note=notes.append):
            pass
        assert notes == [f"took over vm1's run lock from policy nightly (pid 1234 on host-b: "
                         f"no heartbeat for {STALE_AFTER + 30:.0f} s)"]

        plant(path, host="host-b", pid=1234, heartbeat_age=5)
        with pytest.raises(RefusedError) as refused:
            with run_lock(ledger, "vm1", "backed up", "policy weekly"):
                pass
        assert str(refused.value) == busy_line(LedgerRunLocks(ledger).holder("vm1"))
        assert str(refused.value).endswith(" by pid 1234 on host-b")


def test_a_ledger_without_the_lock_table_opens_and_gets_it(tmp_path):
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    with sqlite3.connect(path) as db:  # as a release before the run locks wrote it
        db.execute("DROP TABLE run_locks")
    with Ledger(path) as ledger, run_lock(ledger, "vm1", "backed up", "policy nightly"):
        assert LedgerRunLocks(ledger).holder("vm1") is not None


def test_a_long_run_keeps_beating(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger, run_lock(ledger, "vm1", "backed up", "policy nightly"):
        first = LedgerRunLocks(ledger).holder("vm1")
        time.sleep(HEARTBEAT_EVERY + 0.5)
        later = LedgerRunLocks(ledger).holder("vm1")
        assert later.heartbeat >= first.heartbeat + HEARTBEAT_EVERY
        assert later.started == first.started
