"""The ledger's queries: every transaction sent, every job, every target image and its parent.

Every state change is its own SQLite transaction, written *before* the QMP command it describes is
sent, so killing the app at any moment leaves a ledger that errs on the side of distrust: an image
is VALID only after its job was seen to complete; anything the app could not see end stays
PENDING until reconciled, and becomes UNKNOWN (never trusted) when QEMU can no longer tell. The
file itself (tables, pragmas, upgrades) is :mod:`tui.core.ledger.schema`'s.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from tui.core.ledger.names import OWNER, IssuedNames, owner_alive
from tui.core.ledger.rows import (
    BreakRow,
    ImageRow,
    ImageState,
    JobRow,
    JobState,
    Observation,
    RunLockRow,
    ScheduledRunRow,
    TxnRow,
    TxnState,
)
from tui.core.ledger.schema import atomic, open_ledger

# One image's settled outcome: its id, its new state and its error.
Outcome = tuple[int, ImageState, str | None]


class Ledger(IssuedNames):
    """The ledger database. One instance per process; methods are synchronous and short."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # The path is the session's decision (--ledger or the default); never a fallback here.
        self.path = Path(path)
        self._db, self.ledger_id = open_ledger(self.path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        """One atomic, durable state change."""
        return atomic(self._db)

    # ------------------------------------------------------------------ run locks

    def take_run_lock(self, connection: str, activity: str, holder: str, *,
                      stale_after: float) -> tuple[bool, RunLockRow | None]:
        """Take ``connection``'s run lock for this process, in one transaction: (True, None) when
        it was free, (True, old) when ``old``'s process is gone (same host, no such pid) or has
        not beaten for ``stale_after`` seconds, (False, holder) when someone else holds it."""
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        with self._tx() as db:
            row = db.execute("SELECT * FROM run_locks WHERE connection = ?", (connection,)).fetchone()
            old = _run_lock(row) if row is not None else None
            if old is not None and not _lock_dead(old, now, stale_after):
                return False, old
            db.execute("INSERT OR REPLACE INTO run_locks (connection, activity, holder, host, pid, "
                       "started, heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (connection, activity, holder, host, pid, now, now))
            return True, old

    def beat_run_lock(self, connection: str) -> bool:
        """This process still runs on ``connection``; False when its lock was taken from it."""
        with self._tx() as db:
            cur = db.execute("UPDATE run_locks SET heartbeat = ? WHERE connection = ? AND host = ? "
                             "AND pid = ?", (time.time(), connection, socket.gethostname(), os.getpid()))
            return cur.rowcount == 1

    def drop_run_lock(self, connection: str) -> None:
        """Let go of ``connection``'s run lock (only if this process holds it)."""
        with self._tx() as db:
            db.execute("DELETE FROM run_locks WHERE connection = ? AND host = ? AND pid = ?",
                       (connection, socket.gethostname(), os.getpid()))

    def run_lock(self, connection: str) -> RunLockRow | None:
        row = self._db.execute("SELECT * FROM run_locks WHERE connection = ?", (connection,)).fetchone()
        return _run_lock(row) if row is not None else None

    # ------------------------------------------------------------------ scheduled runs

    def start_scheduled_run(self, policy: str, slot: float, result: str | None = None) -> int:
        """A scheduled run of ``policy`` for ``slot`` begins now (``result`` given: it is over
        at once, e.g. skipped)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute("INSERT INTO scheduled_runs (policy, slot, started, ended, result) "
                             "VALUES (?, ?, ?, ?, ?)",
                             (policy, slot, now, now if result else None, result))
            return int(cur.lastrowid or 0)

    def end_scheduled_run(self, run_id: int, result: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE scheduled_runs SET ended = ?, result = ? WHERE id = ?",
                       (time.time(), result, run_id))

    def scheduled_runs(self, policy: str, limit: int = 20) -> list[ScheduledRunRow]:
        """``policy``'s scheduled runs, newest slot first."""
        rows = self._db.execute("SELECT * FROM scheduled_runs WHERE policy = ? "
                                "ORDER BY slot DESC, id DESC LIMIT ?", (policy, limit))
        return [ScheduledRunRow(r["id"], r["policy"], r["slot"], r["started"], r["ended"],
                                r["result"]) for r in rows]

    # ------------------------------------------------------------------ writes

    def new_txn(
        self, connection: str, policy: str | None, mode: str, actions: list[dict[str, Any]] | None = None
    ) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO txns (connection, policy, mode, state, actions, created, owner) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (connection, policy, mode, TxnState.PLANNED, json.dumps(actions or []), time.time(),
                 OWNER),
            )
            return int(cur.lastrowid or 0)

    def release(self, txn_ids: list[int]) -> None:
        """The run that owns these transactions is over: reconcile may resolve what is open."""
        with self._tx() as db:
            db.executemany("UPDATE txns SET owner = NULL WHERE id = ?", [(t,) for t in txn_ids])

    def set_actions(self, txn_id: int, actions: list[dict[str, Any]]) -> None:
        with self._tx() as db:
            db.execute("UPDATE txns SET actions = ? WHERE id = ?", (json.dumps(actions), txn_id))

    def add_image(
        self,
        *,
        txn_id: int,
        connection: str,
        policy: str | None,
        drive: str,
        node: str,
        bitmap: str,
        path: str,
        kind: str,
        parent_id: int | None,
        job_id: str,
        source_file: str | None,
        source_size: int | None,
        bitmap_mode: str = "on-success",
    ) -> int:
        """A planned target image (PENDING) and its job (pending), in one transaction."""
        with self._tx() as db:
            chain = None
            if parent_id is not None:
                row = db.execute("SELECT chain_id FROM images WHERE id = ?", (parent_id,)).fetchone()
                chain = row["chain_id"] if row else None
            cur = db.execute(
                "INSERT INTO images (txn_id, connection, policy, drive, node, bitmap, path, kind, "
                "parent_id, chain_id, state, job_id, source_file, source_size, created, bitmap_mode) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (txn_id, connection, policy, drive, node, bitmap, path, kind, parent_id, chain,
                 ImageState.PENDING, job_id, source_file, source_size, time.time(), bitmap_mode),
            )
            image_id = int(cur.lastrowid or 0)
            if kind == "full":
                db.execute("UPDATE images SET chain_id = id WHERE id = ?", (image_id,))
            db.execute(
                "INSERT INTO jobs (txn_id, connection, job_id, node, state) VALUES (?, ?, ?, ?, ?)",
                (txn_id, connection, job_id, node, JobState.PENDING),
            )
            return image_id

    def set_image_nodes(self, image_id: int, file_node: str | None, target_node: str | None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE images SET file_node = ?, target_node = ? WHERE id = ?",
                (file_node, target_node, image_id),
            )

    def set_image_size(self, image_id: int, size: int | None) -> None:
        with self._tx() as db:
            db.execute("UPDATE images SET size = ? WHERE id = ?", (size, image_id))

    def set_file_identity(self, image_id: int, st: os.stat_result) -> None:
        """The file this ledger created for an image, as it is now (device, inode, size, mtime)."""
        with self._tx() as db:
            db.execute(
                "UPDATE images SET file_dev = ?, file_ino = ?, file_size = ?, file_mtime_ns = ? "
                "WHERE id = ?", (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, image_id))

    def refresh_file_identity(self, image_id: int, st: os.stat_result) -> None:
        """The file's size and mtime when the ledger let go of it, if it is still the file the
        ledger created (same device and inode); otherwise nothing changes."""
        with self._tx() as db:
            db.execute(
                "UPDATE images SET file_size = ?, file_mtime_ns = ? "
                "WHERE id = ? AND file_dev = ? AND file_ino = ?",
                (st.st_size, st.st_mtime_ns, image_id, st.st_dev, st.st_ino))

    def set_canary_count(self, image_id: int, count: int) -> None:
        """A full image's chain got its sentinel and size canary; ``count``: the canary's count
        (every bit set) that only a resize of the disk lowers."""
        with self._tx() as db:
            db.execute("UPDATE images SET canary_count = ? WHERE id = ?", (count, image_id))

    def fail_verification(self, image_id: int, error: str) -> None:
        """``verify: after`` found the new chain different from the disk: never trusted."""
        with self._tx() as db:
            db.execute("UPDATE images SET state = ?, error = ? WHERE id = ? AND state = ?",
                       (ImageState.INVALID, error, image_id, ImageState.VALID))

    def mark_released(self, image_id: int) -> None:
        """The image's target was flushed and detached by us: its job's outcome may now count."""
        with self._tx() as db:
            db.execute("UPDATE images SET released = ? WHERE id = ? AND released IS NULL",
                       (time.time(), image_id))

    def resolve_unreleased(self, image_id: int, state: ImageState, error: str) -> None:
        """A completed job's image whose target could not be released by us (or whose file failed
        its check): never VALID."""
        with self._tx() as db:
            db.execute(
                "UPDATE images SET state = ?, error = ?, ended = ?, released = ? "
                "WHERE id = ? AND state = ?",
                (state, error, time.time(), time.time(), image_id, ImageState.PENDING))

    def record_break(self, connection: str, node: str, bitmap: str, reason: str) -> int:
        """Record that ``bitmap`` on ``node`` missed writes (or may have): every chain using it
        needs a new full backup. Written before the change is sent when we make it."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO breaks (connection, node, bitmap, reason, created) VALUES (?, ?, ?, ?, ?)",
                (connection, node, bitmap, reason, time.time()))
            return int(cur.lastrowid or 0)

    def observe(self, connection: str, node: str, bitmap: str, *, present: bool,
                count: int | None = None, granularity: int | None = None,
                persistent: bool | None = None) -> None:
        """Remember how one of our bitmaps looks now (the last observation replaces the one before)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO observations (connection, node, bitmap, present, count, "
                "granularity, persistent, seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (connection, node, bitmap, int(present), count, granularity,
                 None if persistent is None else int(persistent), time.time()))

    def mark_bitmap_reset(self, image_ids: list[int]) -> None:
        """These full images' bitmaps may be (re)created or cleared from now on (before sending)."""
        if not image_ids:
            return
        with self._tx() as db:
            db.executemany("UPDATE images SET resets_bitmap = 1 WHERE id = ?", [(i,) for i in image_ids])

    def mark_deleted(self, image_ids: list[int]) -> None:
        """Record that these images' files were deleted. Only INVALID/UNKNOWN images qualify."""
        with self._tx() as db:
            db.executemany(
                "UPDATE images SET deleted = ? WHERE id = ? AND state IN (?, ?)",
                [(time.time(), i, ImageState.INVALID, ImageState.UNKNOWN) for i in image_ids],
            )

    def mark_sending(self, txn_id: int, reset_image_ids: list[int] | None = None) -> None:
        """Written just before the transaction goes on the wire: from here on its effect may exist."""
        with self._tx() as db:
            db.executemany(
                "UPDATE images SET resets_bitmap = 1 WHERE id = ?", [(i,) for i in reset_image_ids or []]
            )
            db.execute("UPDATE txns SET state = ? WHERE id = ?", (TxnState.SENDING, txn_id))

    def mark_sent(self, txn_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE txns SET state = ? WHERE id = ?", (TxnState.SENT, txn_id))

    def mark_refused(self, txn_id: int, error: str, *, keep_reset: list[int] | None = None) -> None:
        """Nothing of the transaction happened in QEMU (prepare failed, or it was never sent):
        its images are INVALID and their bitmaps untouched by it, except for the images in
        ``keep_reset`` (their bitmap was reset by an earlier step of the same run)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "UPDATE txns SET state = ?, error = ?, ended = ? WHERE id = ?",
                (TxnState.REFUSED, error, now, txn_id),
            )
            db.execute(
                "UPDATE jobs SET state = ?, error = ?, ended = ? WHERE txn_id = ? AND state = ?",
                (JobState.NOT_STARTED, error, now, txn_id, JobState.PENDING),
            )
            keep = set(keep_reset or [])
            rows = db.execute(
                "SELECT id FROM images WHERE txn_id = ? AND state = ?", (txn_id, ImageState.PENDING)
            ).fetchall()
            for r in rows:
                db.execute(
                    "UPDATE images SET state = ?, error = ?, ended = ?, resets_bitmap = "
                    "CASE WHEN ? THEN resets_bitmap ELSE 0 END WHERE id = ?",
                    (ImageState.INVALID, error, now, r["id"] in keep, r["id"]),
                )

    def record_job(self, connection: str, job_id: str, state: JobState, error: str | None = None) -> None:
        """One job's outcome; its images follow when the transaction is settled."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = ?, error = ?, ended = ? WHERE connection = ? AND job_id = ?",
                (state, error, time.time(), connection, job_id),
            )

    def settle(self, txn_id: int) -> None:
        """Apply the completion-mode rules to the recorded job outcomes (one transaction).

        individual: each image follows its own job. grouped: one failed or cancelled job makes
        every image of the group INVALID; an unknown outcome makes every image UNKNOWN.
        Jobs still pending leave the transaction (and, in grouped mode, all its images) open.
        """
        with self._tx() as db:
            txn = db.execute("SELECT * FROM txns WHERE id = ?", (txn_id,)).fetchone()
            if txn is None or txn["state"] in (TxnState.REFUSED, TxnState.DONE):
                return
            jobs = {r["job_id"]: r for r in db.execute("SELECT * FROM jobs WHERE txn_id = ?", (txn_id,))}
            states = {j: JobState(r["state"]) for j, r in jobs.items()}
            images = list(db.execute(
                "SELECT * FROM images WHERE txn_id = ? AND state = ?", (txn_id, ImageState.PENDING)
            ))
            now = time.time()
            if txn["mode"] == "grouped":
                outcomes = _grouped_outcomes(jobs, states, images)
                if outcomes is None:
                    return
            else:
                outcomes = _individual_outcomes(jobs, states, images)
            db.executemany(
                "UPDATE images SET state = ?, error = ?, ended = ? WHERE id = ?",
                [(state, error, now, image_id) for image_id, state, error in outcomes],
            )
            left = db.execute("SELECT 1 FROM images WHERE txn_id = ? AND state = ? LIMIT 1",
                              (txn_id, ImageState.PENDING)).fetchone()
            if all(s is not JobState.PENDING for s in states.values()) and left is None:
                db.execute(
                    "UPDATE txns SET state = ?, ended = ? WHERE id = ?", (TxnState.DONE, now, txn_id)
                )

    # ------------------------------------------------------------------ reads

    def txn(self, txn_id: int) -> TxnRow | None:
        row = self._db.execute("SELECT * FROM txns WHERE id = ?", (txn_id,)).fetchone()
        return _txn(row) if row else None

    def txns(self, connection: str | None = None) -> list[TxnRow]:
        if connection is None:
            rows = self._db.execute("SELECT * FROM txns ORDER BY id")
        else:
            rows = self._db.execute("SELECT * FROM txns WHERE connection = ? ORDER BY id", (connection,))
        return [_txn(r) for r in rows]

    def open_txns(self, connection: str) -> list[TxnRow]:
        """Transactions whose outcome is not fully recorded yet and whose run is over (the
        reconciler's work list): a transaction a live process is still running is left alone."""
        rows = self._db.execute(
            "SELECT * FROM txns WHERE connection = ? AND state IN (?, ?, ?) ORDER BY id",
            (connection, TxnState.PLANNED, TxnState.SENDING, TxnState.SENT),
        )
        return [_txn(r) for r in rows if not owner_alive(r["owner"])]

    def jobs(self, txn_id: int) -> list[JobRow]:
        rows = self._db.execute("SELECT * FROM jobs WHERE txn_id = ? ORDER BY id", (txn_id,))
        return [
            JobRow(r["id"], r["txn_id"], r["connection"], r["job_id"], r["node"], JobState(r["state"]), r["error"])
            for r in rows
        ]

    def images(
        self, connection: str | None = None, drive: str | None = None, txn_id: int | None = None
    ) -> list[ImageRow]:
        where, args = [], []
        for col, val in (("connection", connection), ("drive", drive), ("txn_id", txn_id)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM images" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [_image(r) for r in self._db.execute(sql, args)]

    def image(self, image_id: int) -> ImageRow | None:
        row = self._db.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        return _image(row) if row else None

    def drives(self, connection: str) -> list[str]:
        rows = self._db.execute(
            "SELECT DISTINCT drive FROM images WHERE connection = ? ORDER BY drive", (connection,)
        )
        return [r["drive"] for r in rows]

    def connections(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT connection FROM txns ORDER BY connection")]

    def path_known(self, path: str) -> bool:
        row = self._db.execute("SELECT 1 FROM images WHERE path = ? LIMIT 1", (path,)).fetchone()
        return row is not None

    def breaks(self, connection: str, node: str | None = None,
               bitmap: str | None = None) -> list[BreakRow]:
        """Recorded breaks of ``connection`` (of one node's bitmap when given), oldest first."""
        where, args = ["connection = ?"], [connection]
        for col, val in (("node", node), ("bitmap", bitmap)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        rows = self._db.execute(f"SELECT * FROM breaks WHERE {' AND '.join(where)} ORDER BY id", args)
        return [BreakRow(r["id"], r["connection"], r["node"], r["bitmap"], r["reason"], r["created"])
                for r in rows]

    def observation(self, connection: str, node: str, bitmap: str) -> Observation | None:
        """The last observation of one of our bitmaps, or None."""
        r = self._db.execute(
            "SELECT * FROM observations WHERE connection = ? AND node = ? AND bitmap = ?",
            (connection, node, bitmap)).fetchone()
        if r is None:
            return None
        return Observation(r["connection"], r["node"], r["bitmap"], bool(r["present"]), r["count"],
                           r["granularity"], None if r["persistent"] is None else bool(r["persistent"]),
                           r["seen"])

    def next_txn_id(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM txns").fetchone()
        return int(row[0])


def _txn(r: sqlite3.Row) -> TxnRow:
    return TxnRow(
        r["id"], r["connection"], r["policy"], r["mode"], TxnState(r["state"]),
        json.loads(r["actions"]), r["error"], r["created"], r["ended"],
    )


def _image(r: sqlite3.Row) -> ImageRow:
    return ImageRow(
        id=r["id"], txn_id=r["txn_id"], connection=r["connection"], policy=r["policy"],
        drive=r["drive"], node=r["node"], bitmap=r["bitmap"], path=r["path"], kind=r["kind"],
        parent_id=r["parent_id"], chain_id=r["chain_id"], state=ImageState(r["state"]),
        job_id=r["job_id"], source_file=r["source_file"], source_size=r["source_size"],
        size=r["size"], resets_bitmap=bool(r["resets_bitmap"]), target_node=r["target_node"],
        file_node=r["file_node"], error=r["error"], created=r["created"], ended=r["ended"],
        deleted=r["deleted"], bitmap_mode=r["bitmap_mode"], released=r["released"],
        file_dev=r["file_dev"], file_ino=r["file_ino"], file_size=r["file_size"],
        file_mtime_ns=r["file_mtime_ns"], canary_count=r["canary_count"],
    )


def _grouped_outcomes(jobs: dict[str, sqlite3.Row], states: dict[str, JobState],
                      images: list[sqlite3.Row]) -> list[Outcome] | None:
    """grouped mode: one failed or cancelled job makes every image INVALID, an unknown outcome
    every image UNKNOWN; None while the group is still open (a job pending, a target not
    released)."""
    bad = [j for j, s in states.items() if s in (JobState.FAILED, JobState.CANCELLED)]
    if bad:
        first = jobs[bad[0]]
        why = f"group failed: job {first['job_id']} {first['state']}"
        return [(im["id"], ImageState.INVALID, why) for im in images]
    if any(s is JobState.PENDING for s in states.values()):
        return None
    if any(s is JobState.UNKNOWN for s in states.values()):
        why = "the group's outcome could not be resolved"
        return [(im["id"], ImageState.UNKNOWN, why) for im in images]
    if any(im["released"] is None for im in images):
        return None  # every target must be released before the group counts
    return [(im["id"], ImageState.VALID, None) for im in images]


def _individual_outcomes(jobs: dict[str, sqlite3.Row], states: dict[str, JobState],
                         images: list[sqlite3.Row]) -> list[Outcome]:
    """individual mode: each image follows its own job (an image whose job has not ended, or
    whose target is not released yet, stays as it is)."""
    out: list[Outcome] = []
    for im in images:
        s = states.get(im["job_id"], JobState.UNKNOWN)
        err = jobs[im["job_id"]]["error"] if im["job_id"] in jobs else "no job recorded"
        if s is JobState.COMPLETED:
            if im["released"] is None:  # its target is not released yet
                continue
            out.append((im["id"], ImageState.VALID, None))
        elif s is JobState.FAILED and im["bitmap_mode"] == "always":
            # QEMU kept in the bitmap exactly what the job did not copy.
            out.append((im["id"], ImageState.INCOMPLETE, err or str(s)))
        elif s in (JobState.FAILED, JobState.CANCELLED, JobState.NOT_STARTED):
            out.append((im["id"], ImageState.INVALID, err or str(s)))
        elif s is JobState.UNKNOWN:
            out.append((im["id"], ImageState.UNKNOWN, err or "outcome unknown"))
    return out


def _run_lock(row: sqlite3.Row) -> RunLockRow:
    return RunLockRow(row["connection"], row["activity"], row["holder"], row["host"], row["pid"],
                      row["started"], row["heartbeat"])


def _lock_dead(lock: RunLockRow, now: float, stale_after: float) -> bool:
    """Is the lock's process gone (same host, no such pid) or silent for ``stale_after`` s?"""
    return now - lock.heartbeat > stale_after or not owner_alive(f"{lock.host}:{lock.pid}")
