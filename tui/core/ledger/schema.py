"""The ledger's file: its tables, its schema version, and opening (creating or upgrading) it.

SQLite in WAL mode. Every state change is its own SQLite transaction (:func:`atomic`), written
*before* the QMP command it describes is sent, so killing the app at any moment leaves a ledger
that errs on the side of distrust (see :mod:`tui.core.ledger.repository`).

``synchronous=FULL``: with WAL, NORMAL may lose the last commits on power loss (not on an app
crash). The commit that matters most is "this drive's bitmap may have been reset" (written before
the transaction is sent); losing it could let the planner base an incremental on a chain whose
bitmap was cleared, i.e. a silently incomplete backup. A policy run writes a handful of rows, so
the extra fsyncs cost nothing noticeable.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tui.core.base.errors import LedgerError
from tui.core.ledger.names import new_ledger_id

SCHEMA_VERSION = 2

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
-- The process running a backup, prune or restore on a connection's VM right now (one at a time):
-- who, where, since when, and when it last said it is still at it (tui.core.chains.lock).
CREATE TABLE IF NOT EXISTS run_locks (
    connection TEXT PRIMARY KEY,
    activity TEXT NOT NULL,
    holder TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL
);
-- Each run a policy's schedule started, or skipped because the one before was still going: the
-- slot it was for, when it ran, its result. A restarted service learns from it what it missed.
CREATE TABLE IF NOT EXISTS scheduled_runs (
    id INTEGER PRIMARY KEY,
    policy TEXT NOT NULL,
    slot REAL NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    result TEXT
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
    # A full image's chain identity: the count of its size canary when the chain started (its
    # sentinel and canary are named after the chain's bitmap); NULL for a chain started before.
    "canary_count": "INTEGER",
}

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



@contextmanager
def atomic(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic, durable state change. A write that fails (disk full, read-only file or
    directory, permission) is rolled back whole and raised as one :class:`LedgerError` line
    naming the file: nothing of the change is recorded."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise LedgerError(f"ledger {_file_of(db)}: cannot write: {exc}") from None
    try:
        yield db
        db.execute("COMMIT")
    except (sqlite3.Error, OSError) as exc:
        _rollback(db)
        raise LedgerError(f"ledger {_file_of(db)}: cannot write: {exc}") from None
    except BaseException:
        _rollback(db)
        raise


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _file_of(db: sqlite3.Connection) -> str:
    """The file of ``db``'s main database (for an error line)."""
    with contextlib.suppress(sqlite3.Error):
        for row in db.execute("PRAGMA database_list"):
            if row[1] == "main":
                return str(row[2])
    return "(unknown file)"


def open_ledger(path: Path) -> tuple[sqlite3.Connection, str]:
    """Open the ledger file at ``path`` (created, or upgraded when an older release wrote it):
    its connection and its ledger id. A corrupt, foreign or unreachable file is one
    :class:`LedgerError` line, and the file is left as it is."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, one per state change.
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        for stmt in _statements(_SCHEMA):
            db.execute(stmt)
        _add_image_columns(db)
        return db, _stamp(db)
    except (sqlite3.Error, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LedgerError(f"ledger {path}: {reason}") from None


def create_points_tables(db: sqlite3.Connection, path: Path) -> None:
    """The restore-point tables (pruned points, holders, prune steps, restores, frozen txns)."""
    try:
        with atomic(db):
            for stmt in _statements(_POINTS_SCHEMA):
                db.execute(stmt)
    except sqlite3.Error as exc:
        raise LedgerError(f"ledger {path}: {exc}") from None


def _statements(script: str) -> list[str]:
    return [stmt for stmt in script.strip().split(";") if stmt.strip()]


def _add_image_columns(db: sqlite3.Connection) -> None:
    """Add the columns of ``images`` that a ledger written by an older release lacks."""
    columns = {r["name"] for r in db.execute("PRAGMA table_info(images)")}
    for name, decl in _IMAGE_COLUMNS.items():
        if name not in columns:
            with atomic(db):
                db.execute(f"ALTER TABLE images ADD COLUMN {name} {decl}")


def _stamp(db: sqlite3.Connection) -> str:
    """Record the schema version (never lowered) and, once per ledger, its id; return the id."""
    with atomic(db):
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                   (str(SCHEMA_VERSION),))
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema' AND CAST(value AS INTEGER) < ?",
                   (str(SCHEMA_VERSION), SCHEMA_VERSION))
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('ledger_id', ?)",
                   (new_ledger_id(),))
    row = db.execute("SELECT value FROM meta WHERE key = 'ledger_id'").fetchone()
    return str(row[0])
