"""The planner: per drive, a full backup (new chain) or an incremental on its last valid image.

Pure: reads the ledger and a connection snapshot, returns a :class:`Plan`; nothing is sent.

A drive's *current chain* is the one started by the most recent full backup whose transaction
may have reset the drive's bitmap (added, cleared, re-created). The bitmap records writes since
that moment only, so an incremental is possible only on top of that chain, and only if the full
itself is VALID and no image of the chain has an unknown outcome (an unknown job may have cleared
the bitmap, so later writes would be missing from the next incremental).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tui.chains.ledger import ImageRow, ImageState, Ledger
from tui.chains.policy import Policy
from tui.model.state import BitmapState, ConnectionModel, Node


@dataclass(frozen=True, slots=True)
class ChainState:
    """What the ledger says about one drive's current chain."""

    images: tuple[ImageRow, ...]  # the current chain, oldest first (all states)
    base: ImageRow | None  # the image the next incremental builds on; None → full needed
    reason: str  # why there is (or is not) a base
    busy: ImageRow | None = None  # an image whose job has not been resolved yet


def chain_state(
    ledger: Ledger, connection: str, drive: str, node: str | None = None, bitmap: str | None = None
) -> ChainState:
    """The current chain of ``drive`` and its next base, from the ledger alone.

    With ``node`` and ``bitmap``, a reset of that bitmap recorded under another drive name (a
    policy naming the same disk by its device and another by its node) also ends the chain.
    """
    imgs = ledger.images(connection=connection, drive=drive)
    pending = next((i for i in imgs if i.state is ImageState.PENDING), None)
    anchors = [i for i in imgs if i.kind == "full" and i.resets_bitmap]
    if not anchors:
        return ChainState((), None, "no chain yet", pending)
    anchor = anchors[-1]
    if node is not None and bitmap is not None:
        other = [
            i for i in ledger.images(connection=connection)
            if i.drive != drive and i.node == node and i.bitmap == bitmap and i.kind == "full"
            and i.resets_bitmap and i.id > anchor.id
        ]
        if other:
            chain = tuple(i for i in imgs if i.chain_id == anchor.id)
            return ChainState(
                chain, None, f"bitmap '{bitmap}' was reset by a backup of {other[-1].drive}", pending
            )
    chain = tuple(i for i in imgs if i.chain_id == anchor.id)
    if anchor.state is not ImageState.VALID:
        return ChainState(chain, None, f"its last full backup {anchor.path} is {anchor.state}", pending)
    unknown = next((i for i in chain if i.state is ImageState.UNKNOWN), None)
    if unknown is not None:
        return ChainState(
            chain, None,
            f"the outcome of {unknown.path} is unknown (its bitmap may have been cleared)", pending,
        )
    valid = [i for i in chain if i.state is ImageState.VALID]
    return ChainState(chain, valid[-1], f"last valid image {valid[-1].path}", pending)


@dataclass(frozen=True, slots=True)
class DrivePlan:
    """The decision for one drive of a policy."""

    drive: str
    node: str | None
    kind: str  # "full" or "incremental"
    reason: str
    base: ImageRow | None = None
    # Transaction actions that (re)start the drive's bitmap with the full backup.
    bitmap_actions: tuple[dict[str, Any], ...] = ()
    # An inconsistent bitmap must be removed before the transaction (it can only be removed,
    # and remove + add of one name in one transaction is refused: "Bitmap already exists").
    pre_remove: bool = False
    size: int = 0
    source_file: str = ""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    policy: Policy
    drives: tuple[DrivePlan, ...]
    # The completion mode of the backup transaction.
    mode: str
    # Grouped mode with bitmap actions: they go first, in their own (individual) transaction.
    split: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> list[str]:
        return [f"{d.drive}: {d.error}" for d in self.drives if d.error]


def _bitmap_actions(node: Node, policy: Policy) -> tuple[tuple[dict[str, Any], ...], bool, str | None]:
    """Actions that make the policy's bitmap empty and recording, atomically with a full backup."""
    ref = {"node": node.node_name, "name": policy.bitmap}
    bm = node.bitmap(policy.bitmap)
    add: dict[str, Any] = dict(ref)
    if policy.persistent:
        add["persistent"] = True
    if policy.granularity:
        add["granularity"] = policy.granularity
    if bm is None:
        return ({"type": "block-dirty-bitmap-add", "data": add},), False, None
    state = bm.state
    if state is BitmapState.FROZEN:
        return (), False, f"bitmap '{policy.bitmap}' is in use by another operation (busy)"
    if state is BitmapState.INCONSISTENT:
        return ({"type": "block-dirty-bitmap-add", "data": add},), True, None
    actions: list[dict[str, Any]] = [{"type": "block-dirty-bitmap-clear", "data": dict(ref)}]
    if state is BitmapState.DISABLED:
        actions.append({"type": "block-dirty-bitmap-enable", "data": dict(ref)})
    return tuple(actions), False, None


def plan_drive(ledger: Ledger, conn: ConnectionModel, policy: Policy, drive: str) -> DrivePlan:
    """Decide full or incremental for one drive."""
    node = conn.find_node(drive)
    if node is None:
        return DrivePlan(drive, None, "full", "", error=f"no node or device named '{drive}' on {conn.name}")
    cs = chain_state(ledger, conn.name, drive, node.node_name, policy.bitmap)
    if cs.busy is not None:
        return DrivePlan(
            drive, node.node_name, "full", "",
            error=f"{cs.busy.path} (job {cs.busy.job_id}) has not ended yet; run again when it has",
        )
    bm = node.bitmap(policy.bitmap)
    base = cs.base
    why = cs.reason
    if base is not None:
        was_file, was_size = base.source_file, base.source_size
        if was_file and node.file and was_file != node.file:
            base, why = None, f"a new disk (its file changed from {was_file} to {node.file})"
        elif was_size and node.size and was_size != node.size:
            base, why = None, f"the disk size changed ({was_size} → {node.size} bytes)"
        elif bm is None:
            base, why = None, f"bitmap '{policy.bitmap}' is missing from {node.node_name} (lost, e.g. a QEMU restart)"
        elif bm.state is BitmapState.INCONSISTENT:
            base, why = None, f"bitmap '{policy.bitmap}' is inconsistent (QEMU did not save it cleanly)"
        elif bm.state is BitmapState.DISABLED:
            base, why = None, f"bitmap '{policy.bitmap}' is disabled (it missed writes)"
        elif bm.state is BitmapState.FROZEN:
            return DrivePlan(drive, node.node_name, "incremental", "",
                             error=f"bitmap '{policy.bitmap}' is in use by another operation (busy)")
    if base is not None and policy.full_every and len(cs.images) >= policy.full_every:
        # Retention: a chain holds at most full_every runs (its full and the incrementals).
        base, why = None, f"the chain has {len(cs.images)} runs (full_every: {policy.full_every})"
    if base is not None:
        return DrivePlan(
            drive, node.node_name, "incremental", f"on top of {base.path}", base=base,
            size=node.size, source_file=node.file,
        )
    actions, pre_remove, err = _bitmap_actions(node, policy)
    return DrivePlan(
        drive, node.node_name, "full", f"new chain: {why}", bitmap_actions=actions,
        pre_remove=pre_remove, size=node.size, source_file=node.file, error=err,
    )


def make_plan(ledger: Ledger, conn: ConnectionModel, policy: Policy) -> Plan:
    """The whole policy run: per-drive decisions, the completion mode and any split."""
    if policy.format != "qcow2":
        # A raw image cannot name a backing file: there is no incremental chain to keep.
        why = f"format {policy.format} cannot hold backup chains (incrementals need qcow2)"
        return Plan(policy, tuple(DrivePlan(d, None, "full", "", error=why) for d in policy.drives),
                    policy.completion_mode)
    drives = tuple(plan_drive(ledger, conn, policy, d) for d in policy.drives)
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
    return Plan(policy, drives, policy.completion_mode, split, tuple(notes))
