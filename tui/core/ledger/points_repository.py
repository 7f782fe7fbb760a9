"""The ledger's restore-point queries: pruned points, the images holding merged points, prune
steps, restores to new files, and whether a transaction's guest was frozen. Their tables
(:mod:`tui.core.ledger.schema`) are created on first use, so the images table keeps one meaning:
what a backup wrote."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Any

from tui.core.ledger.names import OWNER, owner_alive
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import PruneState, PruneStepRow, RestoreRow, RestoreState
from tui.core.ledger.schema import create_points_tables


class PointsLedger(Ledger):
    """The ledger with the restore-point tables (pruned points, holders, prune steps, restores)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        create_points_tables(self._db, self.path)

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
