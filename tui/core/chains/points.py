"""Restore points: every backup image the ledger recorded is a point in time of its drive.

Pure: reads the ledger. A drive's points are numbered 1, 2, ... in the order the ledger recorded
its images (the numbers never change: images are never removed from the ledger). A point is
restorable when its image is VALID, it was not pruned, and no prune step on its drive is
unfinished. Its *files* are the images a reader opens to see the disk at that point, oldest first:
after a merge (``qemu-img commit``), a point may be held by its chain's base file.

A *VM-wide point* is a run (transaction) in which every drive of the policy got a VALID image:
the drives' points of that run belong to one instant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from tui.core.base.errors import ValidationError
from tui.core.ledger.points_repository import PointsLedger
from tui.core.ledger.rows import ImageRow, ImageState, TxnState

#: Verdicts beyond the image states: the point's data was removed by prune; or a prune step on
#: its drive is unfinished (run prune again to finish it).
PRUNED = "pruned"
BUSY = "busy"


@dataclass(frozen=True, slots=True)
class Point:
    """One restore point of one drive."""

    connection: str
    policy: str | None
    drive: str
    point: int
    time: float
    kind: str
    image: str  # the file that holds the point's newest data (the top of ``chain``)
    chain: tuple[str, ...]  # the files to open, oldest first
    verdict: str  # an ImageState value, PRUNED or BUSY
    vm_point: int | None  # the transaction, when every drive of the policy is VALID in it
    image_id: int
    txn_id: int
    frozen: bool | None = None  # None: the ledger has no record (no freeze was asked for)

    @property
    def restorable(self) -> bool:
        return self.verdict == ImageState.VALID

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``points --json``."""
        return {
            "connection": self.connection, "policy": self.policy, "drive": self.drive,
            "point": self.point, "time": self.time, "kind": self.kind, "image": self.image,
            "chain": list(self.chain), "verdict": self.verdict, "vm_point": self.vm_point,
            "frozen": self.frozen,
        }


def point_files(image: ImageRow, by_id: dict[int, ImageRow], holders: dict[int, int]) -> list[str]:
    """The files a reader opens for ``image``'s point, oldest first (its chain, after merges)."""
    out: list[str] = []
    cur: ImageRow | None = image
    while cur is not None:
        holder = holders.get(cur.id)
        if holder is not None:  # this point's data was merged into the base's file
            out.append(by_id[holder].path)
            break
        out.append(cur.path)
        cur = by_id.get(cur.parent_id) if cur.parent_id is not None else None
    return out[::-1]


def vm_points(ledger: PointsLedger, images: list[ImageRow]) -> dict[int, int]:
    """image id → its transaction, for the images of runs in which every drive the policy ever
    backed up got a VALID image (a finished transaction)."""
    out: dict[int, int] = {}
    drives_of: dict[tuple[str, str], set[str]] = {}
    for im in images:
        drives_of.setdefault((im.connection, im.policy or ""), set()).add(im.drive)
    by_txn: dict[int, list[ImageRow]] = {}
    for im in images:
        by_txn.setdefault(im.txn_id, []).append(im)
    for txn_id, group in by_txn.items():
        txn = ledger.txn(txn_id)
        if txn is None or txn.state is not TxnState.DONE:
            continue
        wanted = drives_of[(group[0].connection, group[0].policy or "")]
        if {i.drive for i in group} >= wanted and all(i.state is ImageState.VALID for i in group):
            for im in group:
                out[im.id] = txn_id
    return out


def list_points(ledger: PointsLedger, *, policy: str | None = None, drive: str | None = None,
                connection: str | None = None) -> list[Point]:
    """Every point of every drive (optionally of one policy, drive or connection), oldest first
    per drive."""
    every = ledger.images()
    by_id = {i.id: i for i in every}
    holders = ledger.holders()
    pruned = ledger.pruned_ids()
    busy = {(s.connection, s.drive) for s in ledger.prune_steps(open_only=True)}
    frozen = ledger.frozen_txns()
    vm = vm_points(ledger, every)
    numbers: dict[tuple[str, str], int] = {}
    out: list[Point] = []
    for im in every:
        key = (im.connection, im.drive)
        numbers[key] = numbers.get(key, 0) + 1
        if (policy is not None and im.policy != policy) or (drive is not None and im.drive != drive) \
                or (connection is not None and im.connection != connection):
            continue
        files = point_files(im, by_id, holders)
        verdict = str(im.state)
        if im.id in pruned:
            verdict = PRUNED
        elif im.state is ImageState.VALID and key in busy:
            verdict = BUSY
        out.append(Point(
            im.connection, im.policy, im.drive, numbers[key], im.created, im.kind, files[-1],
            tuple(files), verdict, vm.get(im.id) if verdict == ImageState.VALID else None,
            im.id, im.txn_id, frozen.get(im.txn_id),
        ))
    out.sort(key=lambda p: (p.connection, p.drive, p.point))
    return out


class PointError(ValidationError):
    """No such point, or several candidates (the message says which)."""


def find_point(points: list[Point], *, number: int | None = None, at: float | None = None) -> Point:
    """The point numbered ``number``, or the newest restorable point taken at or before ``at``
    (to the second)."""
    if number is not None:
        match = [p for p in points if p.point == number]
        if not match:
            known = ", ".join(str(p.point) for p in points) or "none"
            raise PointError(f"no point {number} (points: {known})")
        return match[0]
    if at is None:
        raise PointError("give a point number or a time")
    # Whole seconds, as listed: the time `points` prints selects that point.
    before = [p for p in points if int(p.time) <= at and p.restorable]
    if not before:
        raise PointError("no restorable point at or before that time")
    return before[-1]


def describe(p: Point) -> str:
    """One line for a listing."""
    frozen = " frozen" if p.frozen else ""
    vm = f" vm-point {p.vm_point}" if p.vm_point is not None else ""
    chain = " ← ".join(os.path.basename(f) for f in reversed(p.chain))
    return f"{p.point:>4} {p.kind:<11} {p.verdict.upper():<8}{frozen}{vm}  {chain}"
