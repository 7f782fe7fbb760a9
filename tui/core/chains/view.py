"""The chain view as data: per drive its chain, the next base, VM-wide points, every bitmap on
the ledger's connections with its owner, and problems.

Pure: reads the ledger and (optionally) a live fleet snapshot. The headless ``chains`` command
and the TUI screen both render this. A problem with a fix is only ever about something of ours:
a bitmap of another tool, of another ledger, or of no known owner is listed with its owner and
never offered for removal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tui.core.chains.chain import ChainState, chain_state
from tui.core.chains.cleanup import deletable_images
from tui.core.chains.owners import owner_of
from tui.core.chains.watch import live_breaks
from tui.core.ledger.names import with_companions
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageRow, ImageState, TxnState
from tui.core.model.state import BitmapState, ConnectionModel, FleetState, LinkState
from tui.core.qmp.address import parse_address_lenient


@dataclass(frozen=True, slots=True)
class ImageView:
    path: str
    kind: str
    state: str
    size: int | None
    txn_id: int
    created: float
    error: str | None = None
    deleted: bool = False  # its file was deleted through the "invalid images" fix


@dataclass(frozen=True, slots=True)
class DriveView:
    connection: str
    drive: str
    node: str
    bitmap: str
    chain: tuple[ImageView, ...]  # the current chain, oldest first
    next_base: str | None  # path the next incremental builds on; None → a full backup
    next_reason: str
    bitmap_state: str  # live: active/disabled/frozen/inconsistent/missing, or "unknown" offline


@dataclass(frozen=True, slots=True)
class Problem:
    """A bitmap that does not match the ledger, or images to clean up, with a suggested fix.

    ``command`` is the QMP command that applies the fix (after confirmation), or None when the
    fix is simply the next policy run. An "invalid-images" problem instead carries the images
    (``image_ids``, ``paths``) whose files the fix deletes; ``remote`` when QEMU is on another
    machine, where this app cannot delete files (the fix then only lists them).
    """

    kind: str  # "retired", "lost", "inconsistent", "disabled", "invalid-images"
    connection: str
    node: str
    bitmap: str
    text: str
    fix: str
    command: tuple[str, dict[str, Any]] | None = None
    image_ids: tuple[int, ...] = ()
    paths: tuple[str, ...] = ()
    remote: bool = False

    @property
    def deletes_files(self) -> bool:
        """Applying this fix deletes image files (on this machine)."""
        return bool(self.image_ids) and not self.remote


@dataclass(frozen=True, slots=True)
class ConsistentPoint:
    """The last transaction in which every drive of a policy got a VALID image (one instant)."""

    policy: str
    connection: str
    txn_id: int
    time: float
    images: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BitmapView:
    """A named bitmap on a node of a ledger connection, with its owner."""

    connection: str
    node: str
    name: str
    owner: str  # "policy P (D)", "this ledger", "bitmap-tui ledger X", a tool, or "unknown"
    ours: bool  # made by this ledger
    state: str
    count: int


@dataclass
class ChainsView:
    drives: list[DriveView] = field(default_factory=list)
    points: list[ConsistentPoint] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    bitmaps: list[BitmapView] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drives": [
                {**{k: getattr(d, k) for k in d.__slots__ if k != "chain"},
                 "chain": [vars_of(i) for i in d.chain]}
                for d in self.drives
            ],
            "consistent_points": [vars_of(p) for p in self.points],
            "bitmaps": [vars_of(b) for b in self.bitmaps],
            "problems": [
                {**vars_of(p), "command": (
                    {"execute": p.command[0], "arguments": p.command[1]} if p.command else None)}
                for p in self.problems
            ],
        }


def vars_of(obj: Any) -> dict[str, Any]:
    out = {k: getattr(obj, k) for k in obj.__slots__}
    for k, v in out.items():
        if isinstance(v, tuple):
            out[k] = list(v)
    return out


def _image_view(im: ImageRow) -> ImageView:
    return ImageView(im.path, im.kind, str(im.state), im.size, im.txn_id, im.created, im.error,
                     im.deleted is not None)


def consistent_points(ledger: Ledger) -> list[ConsistentPoint]:
    """Per (connection, policy): the latest transaction where all its drives backed up VALID."""
    out: list[ConsistentPoint] = []
    images = ledger.images()
    keys = sorted({(i.connection, i.policy or "") for i in images})
    for conn, pol in keys:
        mine = [i for i in images if i.connection == conn and (i.policy or "") == pol]
        drives = {i.drive for i in mine}
        by_txn: dict[int, list[ImageRow]] = {}
        for i in mine:
            by_txn.setdefault(i.txn_id, []).append(i)
        for txn_id in sorted(by_txn, reverse=True):
            group = by_txn[txn_id]
            txn = ledger.txn(txn_id)
            if txn is None or txn.state is not TxnState.DONE:
                continue
            if {i.drive for i in group} >= drives and all(i.state is ImageState.VALID for i in group):
                out.append(ConsistentPoint(pol, conn, txn_id, txn.created, tuple(i.path for i in group)))
                break
    return out


def build_view(ledger: Ledger, fleet: FleetState | None = None) -> ChainsView:
    """The whole view. Without ``fleet`` (offline) bitmaps are "unknown" and no problems are listed."""
    view = ChainsView(points=consistent_points(ledger))
    known: set[tuple[str, str, str]] = set()
    for conn_name in sorted({i.connection for i in ledger.images()}):
        live = fleet.get(conn_name) if fleet is not None else None
        online = live is not None and live.state is LinkState.CONNECTED and live.synced
        for drive in ledger.drives(conn_name):
            view.drives.append(_drive_view(ledger, view, known, conn_name, drive,
                                           live if online else None))
    if fleet is not None:
        _add_live_bitmaps(ledger, fleet, view, known)
    return view


def _drive_view(ledger: Ledger, view: ChainsView, known: set[tuple[str, str, str]],
                conn_name: str, drive: str, live: ConnectionModel | None) -> DriveView:
    """One drive's chain. ``live``: its QEMU, connected and synced (else None): the bitmap's
    state is read there, and the problems found are added to ``view``; the (connection, node,
    bitmap) of the chain go into ``known``."""
    imgs = ledger.images(connection=conn_name, drive=drive)
    last = imgs[-1]
    cs = chain_state(ledger, conn_name, drive)
    bitmap = cs.images[0].bitmap if cs.images else last.bitmap
    known.update((conn_name, last.node, name) for name in with_companions({bitmap}))
    bstate = "unknown"
    node_name = last.node
    if live is not None:
        node = live.find_node(drive)
        if node is None:
            bstate = "no such node"
        else:
            node_name = node.node_name
            known.add((conn_name, node.node_name, bitmap))
            bm = node.bitmap(bitmap)
            bstate = str(bm.state) if bm is not None else "missing"
            if ledger.issued(bitmap):  # problems only about what is ours
                view.problems.extend(_drive_problems(conn_name, drive, node.node_name,
                                                     bitmap, bstate, cs.base is not None))
        # connected: its open files are known
        cleanup = _invalid_images(ledger, live, drive, node_name, bitmap)
        if cleanup is not None:
            view.problems.append(cleanup)
    base, next_reason = _next_base(ledger, cs, bstate, live, conn_name, drive, bitmap)
    return DriveView(
        conn_name, drive, node_name, bitmap,
        tuple(_image_view(i) for i in cs.images) if cs.images else (_image_view(last),),
        base.path if base else None, next_reason, bstate,
    )


def _next_base(ledger: Ledger, cs: ChainState, bstate: str, live: ConnectionModel | None,
               conn_name: str, drive: str, bitmap: str) -> tuple[ImageRow | None, str]:
    """The image the next incremental builds on (None: a full backup) and why."""
    if cs.base is not None and bstate not in ("unknown", str(BitmapState.ACTIVE)):
        return None, f"bitmap {bstate}: the next backup is a full one"
    if cs.base is not None and live is not None:
        node = live.find_node(drive)
        seen = live_breaks(ledger, conn_name, node, bitmap) if node is not None else []
        if seen:  # a change the next run will record: it takes a full
            return None, f"chain broken: {seen[0]}"
    return cs.base, cs.reason


def _add_live_bitmaps(ledger: Ledger, fleet: FleetState, view: ChainsView,
                      known: set[tuple[str, str, str]]) -> None:
    """Every bitmap on the connected QEMUs this ledger has backed up, with its owner; one of
    ours that no chain in ``known`` uses is a "retired" problem."""
    ledger_conns = set(ledger.connections())
    for conn_name, live in fleet.connections.items():
        if conn_name not in ledger_conns or live.state is not LinkState.CONNECTED:
            continue
        for node in live.nodes.values():
            for bm in node.named_bitmaps:
                name = bm.name or ""
                ours = ledger.issued(name)
                view.bitmaps.append(BitmapView(
                    conn_name, node.node_name, name,
                    owner_of(ledger, conn_name, node.node_name, name), ours, str(bm.state),
                    bm.count))
                if ours and (conn_name, node.node_name, name) not in known and not bm.busy:
                    view.problems.append(Problem(
                        "retired", conn_name, node.node_name, name,
                        f"bitmap '{name}' on {node.node_name} belonged to a chain of this ledger "
                        "that a newer chain replaced; nothing reads it any more",
                        "remove it (it costs memory and slows writes)",
                        ("block-dirty-bitmap-remove", {"node": node.node_name, "name": name}),
                    ))


def is_remote(live: ConnectionModel) -> bool:
    """Is this QEMU on another machine (its image files are not ours to delete)?"""
    return parse_address_lenient(live.address).kind != "unix"


def _invalid_images(ledger: Ledger, live: ConnectionModel, drive: str, node: str,
                    bitmap: str) -> Problem | None:
    """INVALID/UNKNOWN images of ``drive`` still on disk: offer to delete them."""
    open_files = {n.file for n in live.nodes.values() if n.file}
    imgs = deletable_images(ledger, live.name, drive, open_files)
    if not imgs:
        return None
    remote = is_remote(live)
    names = ", ".join(os.path.basename(i.path) for i in imgs)
    fix = ("delete invalid image(s): " + names if not remote else
           f"delete invalid image(s) on the QEMU host by hand ({live.address} is remote): " + names)
    return Problem(
        "invalid-images", live.name, node, bitmap,
        f"{drive}: {len(imgs)} invalid/unknown image(s) left on disk: {names}",
        fix, None, tuple(i.id for i in imgs), tuple(i.path for i in imgs), remote,
    )


def _drive_problems(conn: str, drive: str, node: str, bitmap: str, state: str, has_chain: bool) -> list[Problem]:
    if state == "missing" and has_chain:
        return [Problem(
            "lost", conn, node, bitmap,
            f"{drive}: bitmap '{bitmap}' is gone from {node} (QEMU restarted, or it was removed)",
            "run the policy: it starts a new chain with a full backup and re-adds the bitmap",
        )]
    if state == str(BitmapState.INCONSISTENT):
        return [Problem(
            "inconsistent", conn, node, bitmap,
            f"{drive}: bitmap '{bitmap}' on {node} is inconsistent (QEMU did not store it cleanly)",
            "remove it; the next policy run then starts a new chain with a full backup",
            ("block-dirty-bitmap-remove", {"node": node, "name": bitmap}),
        )]
    if state == str(BitmapState.DISABLED) and has_chain:
        return [Problem(
            "disabled", conn, node, bitmap,
            f"{drive}: bitmap '{bitmap}' on {node} is disabled, so it missed writes",
            "run the policy: it clears and enables the bitmap with a new full backup",
        )]
    return []
