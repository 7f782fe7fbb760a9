"""The planner: per drive, a full backup (new chain) or an incremental on its last valid image.

Pure: reads the ledger and a connection snapshot, returns a :class:`Plan`; nothing is sent.

A drive's *current chain* is the one started by the most recent full backup whose transaction
may have started the drive's bitmap. Each chain has its own bitmap, named by the ledger
(``bt.<ledger id>.<policy>.c<txn>``), so no other ledger or tool shares it and a new chain never
reuses an old name. The bitmap records writes since the chain's start only, so an incremental is
possible only on top of that chain, and only if:

* the full itself is VALID (or INCOMPLETE: a partial "always" image is a base, not a restore point),
* no image of the chain has an unknown outcome (an unknown job may have cleared the bitmap),
* no break of the bitmap is recorded (cleared, removed, disabled, merged into, re-created, lost
  writes or a resized disk seen by the run's identity check in
  :mod:`tui.core.chains.identity`, ...) and none is seen now
  (:func:`tui.core.chains.watch.live_breaks`),
* the bitmap's name is one this ledger issued (a chain from before owned names is *adopted*:
  its next backup is a full that starts an owned chain),
* the chain is shorter than the policy's ``full_every``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tui.core.chains.chain import chain_state
from tui.core.chains.identity import companion_actions
from tui.core.chains.policy import Policy
from tui.core.chains.watch import live_breaks
from tui.core.ledger.names import SENTINEL, companion_bitmap, companion_bitmaps
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import BASE_STATES, ImageRow
from tui.core.model.state import BitmapState, ConnectionModel, Node


@dataclass(frozen=True, slots=True)
class DrivePlan:
    """The decision for one drive of a policy."""

    drive: str
    node: str | None
    kind: str  # "full" or "incremental"
    reason: str
    base: ImageRow | None = None
    # The bitmap of the drive's chain: the base's for an incremental, a new owned name for a full.
    bitmap: str = ""
    # Transaction actions that (re)start the drive's bitmap with the full backup.
    bitmap_actions: tuple[dict[str, Any], ...] = ()
    size: int = 0
    source_file: str = ""
    error: str | None = None
    # An incremental's chain sentinel, cleared with the backup (tui.core.chains.identity); "" for
    # a full or a chain started without one.
    sentinel: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    policy: Policy
    drives: tuple[DrivePlan, ...]
    # The completion mode of the backup transaction.
    mode: str
    # Grouped mode with bitmap actions: they go first, in their own (individual) transaction.
    split: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The ledger transaction the plan names its new bitmaps after (the run's own).
    txn_id: int = 0

    @property
    def errors(self) -> list[str]:
        return [f"{d.drive}: {d.error}" for d in self.drives if d.error]


def _bitmap_actions(node: Node, name: str, policy: Policy
                    ) -> tuple[tuple[dict[str, Any], ...], str | None]:
    """The actions that start a new chain's bitmap and its sentinel, atomically with its full
    backup (the size canary is made just before: tui.core.chains.identity)."""
    for taken in (name, *companion_bitmaps(name)):
        if node.bitmap(taken) is not None:
            # A fresh name already taken: not ours to reuse (someone made it), so refuse.
            return (), (f"bitmap '{taken}' already exists on {node.node_name}, but this ledger "
                        "never made it")
    add: dict[str, Any] = {"node": node.node_name, "name": name}
    if policy.persistent:
        add["persistent"] = True
    if policy.granularity:
        add["granularity"] = policy.granularity
    return ({"type": "block-dirty-bitmap-add", "data": add},
            *companion_actions(node.node_name, name, add)), None


def plan_drive(ledger: Ledger, conn: ConnectionModel, policy: Policy, drive: str,
               txn_id: int | None = None) -> DrivePlan:
    """Decide full or incremental for one drive (a full's new bitmap is named after ``txn_id``,
    by default the ledger's next transaction)."""
    node = conn.find_node(drive)
    if node is None:
        return DrivePlan(drive, None, "full", "", error=f"no node or device named '{drive}' on {conn.name}")
    cs = chain_state(ledger, conn.name, drive)
    if cs.busy is not None:
        return DrivePlan(
            drive, node.node_name, "full", "",
            error=f"{cs.busy.path} (job {cs.busy.job_id}) has not ended yet; run again when it has",
        )
    base = cs.base
    why = cs.reason
    if base is not None:
        was_file, was_size = base.source_file, base.source_size
        bm = node.bitmap(base.bitmap)
        seen = live_breaks(ledger, conn.name, node, base.bitmap) if base.node == node.node_name else [
            f"the drive is now node {node.node_name}, not {base.node}"]
        chain_len = sum(1 for i in cs.images if i.state in BASE_STATES)
        if was_file and node.file and was_file != node.file:
            base, why = None, f"a new disk (its file changed from {was_file} to {node.file})"
        elif was_size and node.size and was_size != node.size:
            base, why = None, f"the disk size changed ({was_size} → {node.size} bytes)"
        elif seen:
            base, why = None, f"chain broken: {seen[0]}"
        elif bm is not None and bm.state is BitmapState.FROZEN:
            return DrivePlan(drive, node.node_name, "incremental", "",
                             error=f"bitmap '{base.bitmap}' is in use by another operation (busy)")
        elif policy.full_every and chain_len >= policy.full_every:
            base, why = None, f"full_every {policy.full_every}: the chain has {chain_len} images"
    if base is not None:
        checked = cs.images[0].canary_count is not None
        return DrivePlan(
            drive, node.node_name, "incremental", f"on top of {base.path}", base=base,
            bitmap=base.bitmap, size=node.size, source_file=node.file,
            sentinel=companion_bitmap(base.bitmap, SENTINEL) if checked else "",
        )
    name = ledger.chain_bitmap(policy.name, txn_id if txn_id is not None else ledger.next_txn_id())
    actions, err = _bitmap_actions(node, name, policy)
    return DrivePlan(
        drive, node.node_name, "full", f"new chain: {why}", bitmap=name, bitmap_actions=actions,
        size=node.size, source_file=node.file, error=err,
    )


def make_plan(ledger: Ledger, conn: ConnectionModel, policy: Policy, txn_id: int | None = None) -> Plan:
    """The whole policy run: per-drive decisions, the completion mode and any split.

    ``txn_id``: the transaction the run records (new bitmaps are named after it); by default the
    ledger's next one.
    """
    txn_id = txn_id if txn_id is not None else ledger.next_txn_id()
    if policy.format != "qcow2":
        # A raw image cannot name a backing file: there is no incremental chain to keep.
        why = f"format {policy.format} cannot hold backup chains (incrementals need qcow2)"
        return Plan(policy, tuple(DrivePlan(d, None, "full", "", error=why) for d in policy.drives),
                    policy.completion_mode, txn_id=txn_id)
    drives = tuple(plan_drive(ledger, conn, policy, d, txn_id) for d in policy.drives)
    nodes = [d.node for d in drives if d.node]
    notes: list[str] = []
    if len(set(nodes)) != len(nodes):
        drives = tuple(
            d if d.error or d.node is None or nodes.count(d.node) == 1 else
            DrivePlan(d.drive, d.node, d.kind, d.reason, error=f"names node {d.node} twice in the policy")
            for d in drives
        )
    split = policy.completion_mode == "grouped" and any(d.bitmap_actions for d in drives)
    if split:
        names = ", ".join(d.drive for d in drives if d.bitmap_actions)
        notes.append(
            f"grouped mode cannot hold bitmap actions (QEMU refuses them), so the bitmaps of {names} "
            "are started in an individual transaction just before the grouped backup; writes in "
            "between land in both the bitmap and the full image, so the chain stays complete. "
            "If the group fails, those drives need a full backup again."
        )
    return Plan(policy, drives, policy.completion_mode, split, tuple(notes), txn_id)
