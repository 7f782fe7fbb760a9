"""Chain identity that survives outsiders: a chain's bitmap is checked against two companions.

QEMU gives a bitmap no identity, and its count cannot tell "kept every write" from "cleared, then
dirtied again". So each chain's bitmap ``C`` gets two companions on the same node, named after
it (:func:`tui.core.ledger.names.companion_bitmaps`), never read by a backup:

* the **sentinel** ``S``: created in the same transaction as ``C`` with the same granularity and
  persistence, so it records the same writes; it is cleared only together with a backup of the
  chain (in the backup's own transaction, or right after a grouped one succeeded). So ``S`` is
  always a subset of ``C``, unless ``C`` lost writes: cleared, removed and added again, or cleared
  offline in the qcow2 file. A persistent chain's sentinel is persistent too, so the check holds
  across a QEMU restart.
* the **size canary** ``K``: disabled, every bit set just before the chain's full backup (merged
  from a scratch ``null-co`` node of the disk's size that a throw-away backup job dirtied). Only
  a resize changes a disabled bitmap's bits: a shrink drops the bits past the new end, and
  growing back adds clear bits. So ``K``'s count falls below the one recorded at the chain's start
  after any shrink, also one grown back to the same size (QEMU sends no event for a resize).

The check (:func:`check_chains`, before each run's planning) costs no guest pause: one
``transaction`` freezes ``C``, ``C`` merged with ``S``, and ``K`` into disabled temporaries at the
same instant; their counts are compared and the temporaries removed. A break found is recorded,
so the run (and every later one) takes a full backup with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from tui.core.base.errors import BitmapTuiError, QMPCommandError
from tui.core.chains.chain import chain_state
from tui.core.chains.policy import Policy
from tui.core.ledger.names import companion_bitmap, companion_bitmaps
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageRow
from tui.core.model.state import Node
from tui.core.txn.targets import QMPConn

LOST_WRITES = "the chain's bitmap lost writes: cleared or replaced outside bitmap-tui"
RESIZED = ("the disk was resized since the chain started (a shrink clears the data past the new "
           "end, also when the disk was grown back to the same size)")
NO_IDENTITY = ("the chain was started before chain identity checks (it has no sentinel bitmap); "
               "a full backup starts a checked chain")
# How long the scratch job that dirties the size canary may take (it copies nothing real).
FILL_TIMEOUT = 60.0


def companion_actions(node: str, chain_bitmap: str, add: dict[str, Any]) -> list[dict[str, Any]]:
    """The action that starts the chain's sentinel beside ``C`` (``add``: ``C``'s own
    ``block-dirty-bitmap-add`` arguments), for the same transaction."""
    sentinel, _canary = companion_bitmaps(chain_bitmap)
    return [{"type": "block-dirty-bitmap-add", "data": {**add, "node": node, "name": sentinel}}]


def backup_guard_actions(node: Node, chain: str, sentinel: str) -> list[dict[str, Any]]:
    """The actions that go before an incremental backup in its own (individual) transaction:
    copies of the chain's bitmaps at the backup's instant (:func:`snapshot_actions`, judged after
    the job by :func:`snapshot_breaks`: nothing can slip in between the check and the backup),
    then the sentinel cleared. The sentinel stays a subset of ``C`` whether the backup succeeds
    (``C`` cleared) or not (``C`` kept)."""
    _sentinel, canary = companion_bitmaps(chain)
    granularity = {name: bm.granularity for name in (chain, canary)
                   if (bm := node.bitmap(name)) is not None and bm.granularity}
    snapshot = snapshot_actions(node.node_name, chain, granularity) if len(granularity) == 2 else []
    return [*snapshot, {"type": "block-dirty-bitmap-clear",
                        "data": {"node": node.node_name, "name": sentinel}}]


async def _node_now(conn: QMPConn, node: str) -> tuple[dict[str, tuple[int, int]], int | None]:
    """Fresh from QEMU: name → (count, granularity) of the named bitmaps on ``node``, and the
    node's size (None when QEMU does not say)."""
    for n in await conn.execute("query-named-block-nodes"):
        if n.get("node-name") == node:
            size = (n.get("image") or {}).get("virtual-size")
            return ({b["name"]: (int(b.get("count", 0)), int(b.get("granularity", 0)))
                     for b in n.get("dirty-bitmaps", []) if b.get("name")},
                    int(size) if isinstance(size, int) else None)
    return {}, None


async def _bitmaps(conn: QMPConn, node: str) -> dict[str, tuple[int, int]]:
    return (await _node_now(conn, node))[0]


async def remove_bitmaps(conn: QMPConn, node: str, names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(BitmapTuiError):
            await conn.execute("block-dirty-bitmap-remove", {"node": node, "name": name})


async def fill_size_canary(conn: QMPConn, node: str, chain_bitmap: str, size: int,
                           scratch: str, job_id: str, add: dict[str, Any]) -> int:
    """Create the chain's size canary on ``node`` with every bit set; its count.

    ``scratch``: a node name of ours for the two ``null-co`` nodes (``-zs``, ``-zx``) of the disk's
    size; a backup job ``job_id`` between them dirties the whole of ``-zx``'s bitmap (null nodes
    read and write nothing: it takes milliseconds even for large disks), which is merged into
    the canary. ``add``: more ``block-dirty-bitmap-add`` arguments of the canary (persistence).
    """
    _sentinel, canary = companion_bitmaps(chain_bitmap)
    src, dst = f"{scratch}-zs", f"{scratch}-zx"
    try:
        for name in (src, dst):
            await conn.execute("blockdev-add", {"driver": "null-co", "node-name": name, "size": size})
        await conn.execute("block-dirty-bitmap-add", {"node": dst, "name": "fill"})
        await conn.execute("blockdev-backup", {"job-id": job_id, "device": src, "target": dst,
                                               "sync": "full", "auto-dismiss": False})
        await _wait_job(conn, job_id)
        await conn.execute("transaction", {"actions": [
            {"type": "block-dirty-bitmap-add",
             "data": {**add, "node": node, "name": canary, "disabled": True}},
            {"type": "block-dirty-bitmap-merge",
             "data": {"node": node, "target": canary, "bitmaps": [{"node": dst, "name": "fill"}]}},
        ]})
        return (await _bitmaps(conn, node)).get(canary, (0, 0))[0]
    finally:
        for name in (src, dst):
            with contextlib.suppress(BitmapTuiError):
                await conn.execute("blockdev-del", {"node-name": name})


async def _wait_job(conn: QMPConn, job_id: str) -> None:
    """Wait for the scratch job to conclude, dismiss it; its error is raised."""
    async with asyncio.timeout(FILL_TIMEOUT):
        while True:
            job = next((j for j in await conn.execute("query-jobs") if j.get("id") == job_id), None)
            if job is None or job.get("status") == "concluded":
                break
            await asyncio.sleep(0.01)
    with contextlib.suppress(BitmapTuiError):
        await conn.execute("job-dismiss", {"id": job_id})
    if job is not None and job.get("error"):
        raise QMPCommandError("blockdev-backup", "GenericError",
                              f"filling the size canary: {job['error']}")


async def chain_breaks(conn: QMPConn, full: ImageRow, last: ImageRow, node: str) -> list[str]:
    """What the chain started by ``full`` (its newest image ``last``) lost, seen now in QEMU
    (empty: its bitmap has every write since the last backup, and the disk kept its size). No
    guest pause: one transaction freezes copies of the three bitmaps at one instant."""
    chain = full.bitmap
    sentinel, canary = companion_bitmaps(chain)
    if full.canary_count is None:
        return [NO_IDENTITY]
    live, size = await _node_now(conn, node)
    if size is not None and last.source_size and size != last.source_size:
        return [f"{RESIZED}: {last.source_size} → {size} bytes"]
    if chain not in live:
        return []  # vanished: the live state shows it (tui.core.chains.watch)
    missing = [n for n in (sentinel, canary) if n not in live]
    if missing:
        return [f"{LOST_WRITES} (its companion bitmap '{missing[0]}' is gone)"]
    await remove_bitmaps(conn, node, _temps(chain))  # left by a run killed mid-check
    await conn.execute("transaction", {"actions": snapshot_actions(
        node, chain, {name: gran for name, (_count, gran) in live.items()})})
    return await snapshot_breaks(conn, node, chain, full.canary_count)


def _temps(chain: str) -> list[str]:
    """The disabled copies one check makes: ``C``, ``C`` merged with ``S``, and ``K``."""
    return [companion_bitmap(chain, f"check{i}") for i in range(3)]


def snapshot_actions(node: str, chain: str, granularity: dict[str, int]) -> list[dict[str, Any]]:
    """Transaction actions that freeze disabled copies of ``C``, of ``C`` merged with ``S``, and of
    ``K`` at the transaction's instant (``granularity``: name → granularity of ``C`` and ``K``;
    each copy has its source's, so the counts compare bit for bit). In a backup's transaction
    they go before the backup action, which then freezes ``C`` itself."""
    sentinel, canary = companion_bitmaps(chain)
    actions: list[dict[str, Any]] = []
    for temp, sources in zip(_temps(chain), ([chain], [chain, sentinel], [canary]), strict=True):
        add = {"node": node, "name": temp, "disabled": True, "granularity": granularity[sources[0]]}
        actions += [{"type": "block-dirty-bitmap-add", "data": add},
                    {"type": "block-dirty-bitmap-merge",
                     "data": {"node": node, "target": temp, "bitmaps": sources}}]
    return actions


async def snapshot_breaks(conn: QMPConn, node: str, chain: str, canary_count: int) -> list[str]:
    """Judge the copies :func:`snapshot_actions` made (then remove them): what the chain had lost
    at that instant (empty: nothing)."""
    temps = _temps(chain)
    try:
        copies = await _bitmaps(conn, node)
    finally:
        await remove_bitmaps(conn, node, temps)
    if not all(t in copies for t in temps):
        return []  # the transaction that makes them did not happen
    count = {t: copies[t][0] for t in temps}
    out = []
    if count[temps[1]] > count[temps[0]]:
        out.append(LOST_WRITES)
    if count[temps[2]] < canary_count:
        out.append(RESIZED)
    return out


async def check_chains(conn: QMPConn, ledger: Ledger, policy: Policy) -> None:
    """Before planning: check each current chain of ``policy`` against its companions and record
    what it lost as a break (the plan then takes a full backup with the reason). The connection's
    state is read again afterwards: QEMU sends no event for a resize, and the plan needs each
    disk's size now."""
    await _check_each(conn, ledger, policy)
    refresh = getattr(conn, "refresh", None)
    if refresh is not None:
        await refresh()


async def _check_each(conn: QMPConn, ledger: Ledger, policy: Policy) -> None:
    for drive in policy.drives:
        node = conn.model.find_node(drive)
        cs = chain_state(ledger, conn.name, drive)
        if node is None or cs.base is None or cs.base.node != node.node_name or not cs.images:
            continue
        full = cs.images[0]
        if not ledger.issued(full.bitmap):
            continue  # adopted: the plan takes a full anyway
        try:
            reasons = await chain_breaks(conn, full, cs.base, node.node_name)
        except QMPCommandError as exc:
            reasons = [f"its bitmaps could not be checked ({exc.desc})"]
        known = {b.reason for b in ledger.breaks(conn.name, node.node_name, full.bitmap)}
        for reason in reasons:
            if reason not in known:
                ledger.record_break(conn.name, node.node_name, full.bitmap, reason)


async def judge_backup_guard(conn: QMPConn, ledger: Ledger, im: ImageRow, chain: str) -> ImageRow:
    """An incremental whose chain's bitmap had lost writes, or whose disk was resized, at the
    backup's own instant (a change between the run's check and its transaction) is INVALID, and
    the chain is broken."""
    full = ledger.image(im.chain_id) if im.chain_id is not None else None
    if full is None or full.canary_count is None:
        return im
    reasons = await snapshot_breaks(conn, im.node, chain, full.canary_count)
    for reason in reasons:
        ledger.record_break(conn.name, im.node, chain, reason)
    if reasons:
        ledger.fail_verification(im.id, f"at the backup's point in time, {reasons[0]}")
    return ledger.image(im.id) or im


async def fill_canaries(conn: QMPConn, ledger: Ledger, drives: Sequence[Any], txn_id: int,
                        image_ids: dict[str, int], step: Callable[[str], None]) -> None:
    """The size canary of each new chain in ``drives`` (a plan's, transaction ``txn_id``), every
    bit set, just before its full backup; its count goes into the ledger."""
    for i, d in enumerate(drives):
        if d.kind != "full" or not d.bitmap_actions:
            continue
        step(f"starting the size canary of {d.drive}'s chain")
        # QEMU's default granularity (the cluster size, 4-64 KiB): a shrink frees whole clusters,
        # so each lost cluster drops canary bits whatever the chain's granularity.
        add = {k: v for k, v in d.bitmap_actions[0]["data"].items() if k == "persistent"}
        count = await fill_size_canary(conn, d.node or "", d.bitmap, d.size,
                                       ledger.node_name(txn_id, i),
                                       f"{ledger.job_id(txn_id, i)}-fill", add)
        ledger.set_canary_count(image_ids[d.drive], count)
