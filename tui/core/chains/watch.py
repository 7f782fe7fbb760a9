"""Changes to our bitmaps that the app can see, judged against the last observation.

QMP gives a bitmap no identity: a bitmap cleared, or removed and added again under the same
name, looks like any other. Our bitmaps have names no other program uses (``bt.<ledger>...``),
and the ledger remembers how each looked the last time we saw it (:meth:`Ledger.observe`). A
change between two observations that no backup of ours explains is a *break*: the chain that
uses the bitmap misses writes, and its next backup must be a full one.

What cannot be seen from here: a clear (or a remove and re-add with the same settings) followed
by more writes than the bitmap held before, while nothing of ours watched. Each run checks that
against the chain's companion bitmaps (:mod:`tui.core.chains.identity`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tui.core.chains.chain import chain_state
from tui.core.ledger.repository import Ledger
from tui.core.model.state import BitmapState, ConnectionModel, LinkState, Node


def live_breaks(ledger: Ledger, connection: str, node: Node, bitmap: str) -> list[str]:
    """Why ``bitmap`` on ``node`` can no longer extend its chain, from the live state and the
    last observation (empty: no change seen). Pure: nothing is recorded."""
    bm = node.bitmap(bitmap)
    obs = ledger.observation(connection, node.node_name, bitmap)
    where = f"bitmap '{bitmap}' on {node.node_name}"
    if bm is None:
        return [f"{where} vanished (removed, or QEMU restarted and it was not persistent)"]
    out: list[str] = []
    if bm.state is BitmapState.INCONSISTENT:
        out.append(f"{where} is inconsistent (QEMU did not store it cleanly)")
    elif bm.state is BitmapState.DISABLED:
        out.append(f"{where} is disabled (it missed writes)")
    if obs is None:
        return out
    if not obs.present:
        out.append(f"{where} vanished and reappeared (re-created: the writes in between are lost)")
    if obs.granularity is not None and bm.granularity and bm.granularity != obs.granularity:
        out.append(f"{where} changed granularity ({obs.granularity} → {bm.granularity} bytes): "
                   "it was re-created")
    if obs.persistent is not None and bm.persistent is not None and bm.persistent != obs.persistent:
        out.append(f"{where} changed persistence ({'persistent' if obs.persistent else 'not persistent'}"
                   f" → {'persistent' if bm.persistent else 'not persistent'}): it was re-created")
    if obs.count is not None and bm.count < obs.count and not _backed_up_since(
            ledger, connection, node.node_name, bitmap, obs.seen):
        out.append(f"{where}'s count dropped from {obs.count} to {bm.count} bytes without a backup "
                   "of ours (cleared, or re-created)")
    return out


def _backed_up_since(ledger: Ledger, connection: str, node: str, bitmap: str, since: float) -> bool:
    """Did a backup of ours that reads this bitmap run after ``since`` (started, ended, or not
    ended yet)? It clears what it copies, so a lower count is expected."""
    return any(
        i.node == node and i.bitmap == bitmap and i.kind == "incremental"
        and (i.created >= since or i.ended is None or i.ended >= since)
        for i in ledger.images(connection=connection)
    )


def observe_bitmap(ledger: Ledger, connection: str, node: Node, bitmap: str) -> None:
    """Record how ``bitmap`` on ``node`` looks now (or that it is missing)."""
    bm = node.bitmap(bitmap)
    if bm is None:
        ledger.observe(connection, node.node_name, bitmap, present=False)
        return
    ledger.observe(connection, node.node_name, bitmap, present=True, count=bm.count,
                   granularity=bm.granularity or None, persistent=bm.persistent)


# A watcher re-records an unchanged, growing bitmap at most this often (seconds).
OBSERVE_EVERY = 5.0


def record_breaks(ledger: Ledger, connection: str, node: Node, bitmap: str, *,
                  throttle: bool = False) -> list[str]:
    """Record every break :func:`live_breaks` finds (once each), then the new observation.

    ``throttle`` (a watcher called on every refresh): a bitmap that only grew is re-recorded at
    most every :data:`OBSERVE_EVERY` seconds.
    """
    reasons = live_breaks(ledger, connection, node, bitmap)
    known = {b.reason for b in ledger.breaks(connection, node.node_name, bitmap)}
    for reason in reasons:
        if reason not in known:
            ledger.record_break(connection, node.node_name, bitmap, reason)
    if throttle and not reasons and _only_grew(ledger, connection, node, bitmap):
        return reasons
    observe_bitmap(ledger, connection, node, bitmap)
    return reasons


def _only_grew(ledger: Ledger, connection: str, node: Node, bitmap: str) -> bool:
    obs = ledger.observation(connection, node.node_name, bitmap)
    bm = node.bitmap(bitmap)
    return (obs is not None and bm is not None and obs.present and obs.count is not None
            and bm.count >= obs.count and time.time() - obs.seen < OBSERVE_EVERY)


def current_bitmaps(ledger: Ledger, connection: str) -> dict[str, set[str]]:
    """node → names of our bitmaps that a current chain of ``connection`` uses."""
    out: dict[str, set[str]] = {}
    for drive in ledger.drives(connection):
        cs = chain_state(ledger, connection, drive)
        if cs.base is not None and ledger.issued(cs.base.bitmap):
            out.setdefault(cs.base.node, set()).add(cs.base.bitmap)
    return out


def watch_connection(ledger: Ledger, conn: Any) -> Callable[[], None]:
    """While the console runs: record every break it sees in our current chains' bitmaps
    (on each change of the connection's state). Returns an unsubscribe function."""
    store = conn.store
    last: dict[tuple[str, str], tuple[int, float]] = {}  # (node, bitmap) → (count, when seen)

    def changed() -> None:
        model: ConnectionModel | None = store.state.connections.get(conn.name)
        if model is None or model.state is not LinkState.CONNECTED or not model.synced:
            return
        if any(ledger.issued(j.id) and not j.finished for j in model.jobs.values()):
            last.clear()  # a backup of ours runs: its bitmap changes are ours
            return
        for node_name, names in current_bitmaps(ledger, conn.name).items():
            node = model.nodes.get(node_name)
            if node is None:
                continue
            for name in names:
                bm = node.bitmap(name)
                seen = last.get((node_name, name))
                if bm is not None and seen is not None and bm.count < seen[0] and \
                        not _backed_up_since(ledger, conn.name, node_name, name, seen[1]):
                    ledger.record_break(conn.name, node_name, name,
                                        f"bitmap '{name}' on {node_name}'s count dropped from "
                                        f"{seen[0]} to {bm.count} bytes without a backup of ours "
                                        "(seen by the console)")
                if bm is not None:
                    last[(node_name, name)] = (bm.count, time.time())
                record_breaks(ledger, conn.name, node, name, throttle=True)

    changed()
    unsubscribe: Callable[[], None] = store.subscribe_connection(conn.name, changed)
    return unsubscribe
