"""The backup ledger: every transaction sent, every job, every target image and its parent.

SQLite in WAL mode. Every state change is its own SQLite transaction, written *before* the QMP
command it describes is sent, so killing the app at any moment leaves a ledger that errs on the
side of distrust: an image is VALID only after its job was seen to complete; anything the app
could not see end stays PENDING until reconciled, and becomes UNKNOWN (never trusted) when QEMU
can no longer tell.

``synchronous=FULL``: with WAL, NORMAL may lose the last commits on power loss (not on an app
crash). The commit that matters most is "this drive's bitmap may have been reset" (written before
the transaction is sent); losing it could let the planner base an incremental on a chain whose
bitmap was cleared, i.e. a silently incomplete backup. A policy run writes a handful of rows, so
the extra fsyncs cost nothing noticeable.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from tui.core.base.errors import ConfigError
from tui.core.base.paths import default_ledger_path
from tui.core.model.state import JobResult

SCHEMA_VERSION = 2


class ImageState(StrEnum):
    PENDING = "pending"
    VALID = "valid"
    INVALID = "invalid"
    # The outcome could not be resolved (QEMU restarted, job vanished): never trusted.
    UNKNOWN = "unknown"
    # A bitmap-mode "always" job that failed part-way: not a restore point by itself, but the
    # bitmap kept exactly what it did not copy, so it is a base for the next incremental.
    INCOMPLETE = "incomplete"


class JobState(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"
    # The transaction was refused before the job started.
    NOT_STARTED = "not-started"

    @classmethod
    def of(cls, result: JobResult) -> JobState:
        """The ledger's word for a job result QEMU reported (LOST: not known, so UNKNOWN)."""
        return cls.UNKNOWN if result is JobResult.LOST else cls(result.value)


class TxnState(StrEnum):
    PLANNED = "planned"  # targets being created, nothing sent yet
    SENDING = "sending"  # the transaction command is (maybe) on the wire
    SENT = "sent"  # QEMU accepted it; jobs run
    REFUSED = "refused"  # QEMU (or target creation) refused it; nothing changed in QEMU
    DONE = "done"  # every job's outcome is recorded


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS txns (
    id INTEGER PRIMARY KEY,
    connection TEXT NOT NULL,
    policy TEXT,
    mode TEXT NOT NULL,
    state TEXT NOT NULL,
    actions TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    created REAL NOT NULL,
    ended REAL,
    -- "host:pid" of the process running it, NULL once that process let go (see release)
    owner TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    txn_id INTEGER NOT NULL REFERENCES txns(id),
    connection TEXT NOT NULL,
    job_id TEXT NOT NULL,
    node TEXT,
    state TEXT NOT NULL,
    error TEXT,
    ended REAL,
    UNIQUE (connection, job_id)
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    txn_id INTEGER NOT NULL REFERENCES txns(id),
    connection TEXT NOT NULL,
    policy TEXT,
    drive TEXT NOT NULL,
    node TEXT NOT NULL,
    bitmap TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('full', 'incremental')),
    parent_id INTEGER REFERENCES images(id),
    chain_id INTEGER,
    state TEXT NOT NULL,
    job_id TEXT,
    source_file TEXT,
    source_size INTEGER,
    size INTEGER,
    resets_bitmap INTEGER NOT NULL DEFAULT 0,
    target_node TEXT,
    file_node TEXT,
    error TEXT,
    created REAL NOT NULL,
    ended REAL,
    deleted REAL
);
CREATE INDEX IF NOT EXISTS images_drive ON images (connection, drive);
-- A bitmap of ours that stopped recording every write (cleared, removed, disabled, merged into,
-- vanished, re-created, ...): the chain that uses it needs a new full backup.
CREATE TABLE IF NOT EXISTS breaks (
    id INTEGER PRIMARY KEY,
    connection TEXT NOT NULL,
    node TEXT NOT NULL,
    bitmap TEXT NOT NULL,
    reason TEXT NOT NULL,
    created REAL NOT NULL
);
-- The last time each bitmap of ours was seen (or seen missing), for detecting changes in between.
CREATE TABLE IF NOT EXISTS observations (
    connection TEXT NOT NULL,
    node TEXT NOT NULL,
    bitmap TEXT NOT NULL,
    present INTEGER NOT NULL,
    count INTEGER,
    granularity INTEGER,
    persistent INTEGER,
    seen REAL NOT NULL,
    PRIMARY KEY (connection, node, bitmap)
);
"""

# Columns added to ``images`` after the first release (added in place to older ledgers).
_IMAGE_COLUMNS = {
    "deleted": "REAL",
    # "on-success" or "always": an "always" job that fails leaves an INCOMPLETE image.
    "bitmap_mode": "TEXT NOT NULL DEFAULT 'on-success'",
    # When the target node was flushed and detached (or the file closed): before that, a
    # completed job's image is not VALID.
    "released": "REAL",
    # The file this ledger created, as it was when the ledger last let go of it: only a file
    # with this identity is ever deleted.
    "file_dev": "INTEGER",
    "file_ino": "INTEGER",
    "file_size": "INTEGER",
    "file_mtime_ns": "INTEGER",
}


OWNER = f"{socket.gethostname()}:{os.getpid()}"
# The states that are never a restore point but must be kept: they are still the base of a chain.
KEPT_NOT_TRUSTED = (ImageState.INCOMPLETE,)
# The states an incremental can build on (see tui.core.chains.plan).
BASE_STATES = (ImageState.VALID, ImageState.INCOMPLETE)


def owner_alive(owner: str | None) -> bool:
    """Is the process that owns a transaction still running? (Another host's: assume so.)"""
    if not owner:
        return False
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def default_path() -> Path:
    """The ledger used when none is named (the XDG state directory)."""
    return default_ledger_path()


@dataclass(frozen=True, slots=True)
class TxnRow:
    id: int
    connection: str
    policy: str | None
    mode: str
    state: TxnState
    actions: list[dict[str, Any]]
    error: str | None
    created: float
    ended: float | None


@dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    txn_id: int
    connection: str
    job_id: str
    node: str | None
    state: JobState
    error: str | None


@dataclass(frozen=True, slots=True)
class ImageRow:
    id: int
    txn_id: int
    connection: str
    policy: str | None
    drive: str
    node: str
    bitmap: str
    path: str
    kind: str
    parent_id: int | None
    chain_id: int | None
    state: ImageState
    job_id: str | None
    source_file: str | None
    source_size: int | None
    size: int | None
    resets_bitmap: bool
    target_node: str | None
    file_node: str | None
    error: str | None
    created: float
    ended: float | None
    deleted: float | None = None  # when its file was deleted (only INVALID/UNKNOWN images)
    bitmap_mode: str = "on-success"
    released: float | None = None
    file_dev: int | None = None
    file_ino: int | None = None
    file_size: int | None = None
    file_mtime_ns: int | None = None

    @property
    def trusted(self) -> bool:
        """A restore point: only a VALID image (with its chain) is the disk at its point."""
        return self.state is ImageState.VALID


@dataclass(frozen=True, slots=True)
class BreakRow:
    """A recorded break of one of our bitmaps (the chain using it needs a new full)."""

    id: int
    connection: str
    node: str
    bitmap: str
    reason: str
    created: float


@dataclass(frozen=True, slots=True)
class Observation:
    """The last sight of one of our bitmaps."""

    connection: str
    node: str
    bitmap: str
    present: bool
    count: int | None
    granularity: int | None
    persistent: bool | None
    seen: float


class Ledger:
    """The ledger database. One instance per process; methods are synchronous and short."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, one per state change.
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            columns = {r["name"] for r in self._db.execute("PRAGMA table_info(images)")}
            for name, decl in _IMAGE_COLUMNS.items():
                if name not in columns:  # a ledger written by an older release
                    with self._tx() as db:
                        db.execute(f"ALTER TABLE images ADD COLUMN {name} {decl}")
            with self._tx() as db:
                db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                           (str(SCHEMA_VERSION),))
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema' AND CAST(value AS INTEGER) < ?",
                           (str(SCHEMA_VERSION), SCHEMA_VERSION))
                # A random id, once per ledger: it makes our bitmap names, job ids and node
                # names unique to this ledger (two ledgers on one QEMU never share one).
                db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('ledger_id', ?)",
                           (secrets.token_hex(4),))
            row = self._db.execute("SELECT value FROM meta WHERE key = 'ledger_id'").fetchone()
            self.ledger_id: str = str(row[0])
        except (sqlite3.Error, OSError) as exc:
            # A corrupt, foreign or unreachable file: one line, and the file is left as it is.
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"ledger {self.path}: {reason}") from None

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ names we issue

    @property
    def prefix(self) -> str:
        """``bt.<ledger id>.``: the start of every job id, node name and bitmap we create."""
        return f"bt.{self.ledger_id}."

    def job_id(self, txn_id: int, index: int) -> str:
        """The backup job id of drive ``index`` of transaction ``txn_id``."""
        return f"{self.prefix}{txn_id}.{index}"

    def node_name(self, txn_id: int, index: int) -> str:
        """The target's format node name (its file node adds ``-f``); under QEMU's 31 bytes."""
        return f"{self.prefix}{txn_id}n{index}"

    def chain_bitmap(self, policy: str, txn_id: int) -> str:
        """The bitmap of the chain a policy's full backup in transaction ``txn_id`` starts:
        ``bt.<ledger id>.<policy>.c<txn>`` (a new chain never reuses an old name)."""
        return f"{self.prefix}{policy}.c{txn_id}"

    def issued(self, name: str) -> bool:
        """Did this ledger issue this job id, node name or bitmap name?"""
        return name.startswith(self.prefix)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable state change."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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

            def put(image: sqlite3.Row, state: ImageState, error: str | None) -> None:
                db.execute(
                    "UPDATE images SET state = ?, error = ?, ended = ? WHERE id = ?",
                    (state, error, now, image["id"]),
                )

            bad = [j for j, s in states.items() if s in (JobState.FAILED, JobState.CANCELLED)]
            if txn["mode"] == "grouped":
                if bad:
                    first = jobs[bad[0]]
                    why = f"group failed: job {first['job_id']} {first['state']}"
                    for im in images:
                        put(im, ImageState.INVALID, why)
                elif any(s is JobState.PENDING for s in states.values()):
                    return
                elif any(s is JobState.UNKNOWN for s in states.values()):
                    for im in images:
                        put(im, ImageState.UNKNOWN, "the group's outcome could not be resolved")
                elif any(im["released"] is None for im in images):
                    return  # every target must be released before the group counts
                else:
                    for im in images:
                        put(im, ImageState.VALID, None)
            else:
                for im in images:
                    s = states.get(im["job_id"], JobState.UNKNOWN)
                    err = jobs[im["job_id"]]["error"] if im["job_id"] in jobs else "no job recorded"
                    if s is JobState.COMPLETED:
                        if im["released"] is None:  # its target is not released yet
                            continue
                        put(im, ImageState.VALID, None)
                    elif s is JobState.FAILED and im["bitmap_mode"] == "always":
                        # QEMU kept in the bitmap exactly what the job did not copy.
                        put(im, ImageState.INCOMPLETE, err or str(s))
                    elif s in (JobState.FAILED, JobState.CANCELLED, JobState.NOT_STARTED):
                        put(im, ImageState.INVALID, err or str(s))
                    elif s is JobState.UNKNOWN:
                        put(im, ImageState.UNKNOWN, err or "outcome unknown")
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
        file_mtime_ns=r["file_mtime_ns"],
    )


# ---------------------------------------------------------------------------------------- points
# Restore points, prune steps and restores (tui.core.chains.points / prune / restore). Kept in their
# own tables, created on first use, so the images table keeps one meaning: what a backup wrote.

_POINTS_SCHEMA = """
-- A point whose data no longer exists (pruned): it is never offered for restore again.
CREATE TABLE IF NOT EXISTS pruned_points (
    image_id INTEGER PRIMARY KEY REFERENCES images(id),
    step_id INTEGER,
    at REAL NOT NULL
);
-- A point whose newest data now lives in another image's file (merged into it by qemu-img commit).
CREATE TABLE IF NOT EXISTS point_holders (
    image_id INTEGER PRIMARY KEY REFERENCES images(id),
    holder_id INTEGER NOT NULL REFERENCES images(id),
    step_id INTEGER
);
-- One prune step (delete a whole chain, or merge incrementals into their base), written before
-- it is done and advanced after each part, so an interrupted step is finished by the next run.
CREATE TABLE IF NOT EXISTS prune_steps (
    id INTEGER PRIMARY KEY,
    connection TEXT NOT NULL,
    drive TEXT NOT NULL,
    action TEXT NOT NULL,
    plan TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT,
    error TEXT,
    created REAL NOT NULL,
    ended REAL
);
-- One restore to a new file: the partial file is ours until the restore ends.
CREATE TABLE IF NOT EXISTS restores (
    id INTEGER PRIMARY KEY,
    connection TEXT NOT NULL,
    drive TEXT NOT NULL,
    image_id INTEGER NOT NULL,
    target TEXT NOT NULL,
    partial TEXT NOT NULL,
    format TEXT NOT NULL,
    route TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT,
    error TEXT,
    created REAL NOT NULL,
    ended REAL
);
-- Whether the guest's file systems were frozen for a transaction's point in time.
CREATE TABLE IF NOT EXISTS frozen_txns (
    txn_id INTEGER PRIMARY KEY REFERENCES txns(id),
    frozen INTEGER NOT NULL,
    thawed INTEGER NOT NULL DEFAULT 0,
    detail TEXT
);
"""


class PruneState(StrEnum):
    PLANNED = "planned"  # written; nothing done yet (or done partly: the step is repeatable)
    COMMITTED = "committed"  # merge: qemu-img commit finished, the base holds the newer point
    REBASED = "rebased"  # merge: the next image names the base as its backing file
    DONE = "done"  # every file of the step deleted


class RestoreState(StrEnum):
    WRITING = "writing"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PruneStepRow:
    id: int
    connection: str
    drive: str
    action: str  # "delete-chain" or "merge"
    plan: dict[str, Any]
    state: PruneState
    owner: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class RestoreRow:
    id: int
    connection: str
    drive: str
    image_id: int
    target: str
    partial: str
    format: str
    route: str
    state: RestoreState
    owner: str | None
    error: str | None


class PointsLedger(Ledger):
    """The ledger with the restore-point tables (pruned points, holders, prune steps, restores)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(path)
        try:
            with self._tx() as db:
                for stmt in _POINTS_SCHEMA.strip().split(";"):
                    if stmt.strip():
                        db.execute(stmt)
        except sqlite3.Error as exc:
            raise ConfigError(f"ledger {self.path}: {exc}") from None

    def __enter__(self) -> PointsLedger:
        return self

    # ------------------------------------------------------------------ points

    def pruned_ids(self) -> set[int]:
        """Images whose point was pruned."""
        return {r[0] for r in self._db.execute("SELECT image_id FROM pruned_points")}

    def holders(self) -> dict[int, int]:
        """image id → id of the image whose file now holds that image's point."""
        return {r[0]: r[1] for r in self._db.execute("SELECT image_id, holder_id FROM point_holders")}

    # ------------------------------------------------------------------ prune steps

    def new_prune_step(self, connection: str, drive: str, action: str, plan: dict[str, Any],
                       pruned: list[int]) -> int:
        """Record a step and the points it destroys (they are gone from this commit on)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO prune_steps (connection, drive, action, plan, state, owner, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (connection, drive, action, json.dumps(plan), PruneState.PLANNED, OWNER, now),
            )
            step = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT OR IGNORE INTO pruned_points (image_id, step_id, at) VALUES (?, ?, ?)",
                [(i, step, now) for i in pruned],
            )
            return step

    def advance_prune_step(self, step_id: int, state: PruneState, *,
                           holder: tuple[int, int] | None = None,
                           deleted: list[int] | None = None,
                           plan: dict[str, Any] | None = None) -> None:
        """Move a step on; ``holder`` (image, holder) and ``deleted`` images in the same commit."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "UPDATE prune_steps SET state = ?, ended = CASE WHEN ? THEN ? ELSE ended END "
                "WHERE id = ?", (state, state is PruneState.DONE, now, step_id),
            )
            if plan is not None:
                db.execute("UPDATE prune_steps SET plan = ? WHERE id = ?", (json.dumps(plan), step_id))
            if holder is not None:
                db.execute(
                    "INSERT OR REPLACE INTO point_holders (image_id, holder_id, step_id) "
                    "VALUES (?, ?, ?)", (holder[0], holder[1], step_id),
                )
            db.executemany(
                "UPDATE images SET deleted = ? WHERE id = ? AND deleted IS NULL",
                [(now, i) for i in deleted or []],
            )

    def set_prune_error(self, step_id: int, error: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE prune_steps SET error = ? WHERE id = ?", (error, step_id))

    def release_prune_steps(self, step_ids: list[int]) -> None:
        """This process stopped working on these steps: the next prune may finish them."""
        with self._tx() as db:
            db.executemany("UPDATE prune_steps SET owner = NULL WHERE id = ?",
                           [(s,) for s in step_ids])

    def take_prune_step(self, step_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE prune_steps SET owner = ? WHERE id = ?", (OWNER, step_id))

    def prune_steps(self, connection: str | None = None, *, open_only: bool = False) -> list[PruneStepRow]:
        sql, args = "SELECT * FROM prune_steps", []
        where = []
        if connection is not None:
            where.append("connection = ?")
            args.append(connection)
        if open_only:
            where.append("state != ?")
            args.append(PruneState.DONE)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [
            PruneStepRow(r["id"], r["connection"], r["drive"], r["action"], json.loads(r["plan"]),
                         PruneState(r["state"]), r["owner"], r["error"])
            for r in self._db.execute(sql + " ORDER BY id", args)
        ]

    # ------------------------------------------------------------------ restores

    def new_restore(self, *, connection: str, drive: str, image_id: int, target: str,
                    partial: str, fmt: str, route: str) -> int:
        """Written before the partial file is created: a kill leaves a record of it."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO restores (connection, drive, image_id, target, partial, format, route, "
                "state, owner, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (connection, drive, image_id, target, partial, fmt, route, RestoreState.WRITING,
                 OWNER, time.time()),
            )
            return int(cur.lastrowid or 0)

    def set_restore_partial(self, restore_id: int, partial: str) -> None:
        """Record the restore's partial file (or export socket) before it is created."""
        with self._tx() as db:
            db.execute("UPDATE restores SET partial = ? WHERE id = ?", (partial, restore_id))

    def end_restore(self, restore_id: int, state: RestoreState, error: str | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE restores SET state = ?, error = ?, ended = ?, owner = NULL WHERE id = ?",
                (state, error, time.time(), restore_id),
            )

    def abandoned_restores(self) -> list[RestoreRow]:
        """Restores still WRITING whose process is gone (killed): their partial files are ours."""
        rows = self._db.execute("SELECT * FROM restores WHERE state = ? ORDER BY id",
                                (RestoreState.WRITING,))
        return [_restore(r) for r in rows if not owner_alive(r["owner"])]

    def restores(self) -> list[RestoreRow]:
        return [_restore(r) for r in self._db.execute("SELECT * FROM restores ORDER BY id")]

    # ------------------------------------------------------------------ freeze

    def record_frozen(self, txn_id: int, frozen: bool, detail: str | None = None) -> None:
        """Before the transaction is sent: whether the guest was frozen for it."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO frozen_txns (txn_id, frozen, thawed, detail) "
                "VALUES (?, ?, 0, ?)", (txn_id, int(frozen), detail),
            )

    def record_thawed(self, txn_id: int, detail: str | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE frozen_txns SET thawed = 1, detail = COALESCE(?, detail) WHERE txn_id = ?",
                (detail, txn_id),
            )

    def unthawed(self, connection: str) -> list[int]:
        """Transactions of ``connection`` whose guest was (maybe) frozen and not seen thawed."""
        rows = self._db.execute(
            "SELECT f.txn_id FROM frozen_txns f JOIN txns t ON t.id = f.txn_id "
            "WHERE t.connection = ? AND f.frozen = 1 AND f.thawed = 0 ORDER BY f.txn_id",
            (connection,))
        return [r[0] for r in rows]

    def frozen_txns(self) -> dict[int, bool]:
        """txn id → whether the guest was frozen for it (only transactions with a record)."""
        return {r[0]: bool(r[1]) for r in self._db.execute("SELECT txn_id, frozen FROM frozen_txns")}


def _restore(r: sqlite3.Row) -> RestoreRow:
    return RestoreRow(
        r["id"], r["connection"], r["drive"], r["image_id"], r["target"], r["partial"], r["format"],
        r["route"], RestoreState(r["state"]), r["owner"], r["error"],
    )
