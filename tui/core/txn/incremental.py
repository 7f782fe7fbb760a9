""""An incremental backup of these drives", with the defaults an operator would choose.

:func:`plan_incremental` picks each drive's bitmap (the one under the cursor, else a policy's
bitmap, else the drive's one active, recording, non-busy bitmap), names a new target image next to
the drive's image with a per-drive number that collides with nothing, and returns a
``blockdev-backup`` transaction plus the targets to create first. Drives without a usable bitmap
are skipped with the reason. :func:`create_targets` makes the images through QEMU
(``blockdev-create`` + ``blockdev-add``) right before the transaction is sent.

No Textual here; the composer and tests share it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from tui.core.base.errors import BitmapTuiError
from tui.core.model.state import Bitmap, BitmapState, ConnectionModel, Node
from tui.core.qmp.address import parse_address_lenient
from tui.core.txn.model import GROUPED, Action, Transaction
from tui.core.txn.targets import QMPConn, Target, create_target, release_target

#: The default target name: next to the drive's image, numbered per drive.
DEFAULT_PATTERN = "{dir}/{device}-incr-{n}.qcow2"
_UNSAFE_NODE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class PlannedTarget:
    """A target image to create through QEMU before the transaction is sent."""

    device: str
    path: str
    node: str
    size: int
    #: QEMU runs on another machine: whether a file of this name exists there is unknown (and
    #: blockdev-create would truncate it), so sending asks first
    unverified: bool = False

    def warning(self) -> str | None:
        """The risk of creating this target, when there is one."""
        if not self.unverified:
            return None
        return (f"{self.device}: QEMU is on another machine; if {self.path} exists there, "
                "creating the target truncates it")


@dataclass(frozen=True, slots=True)
class Skipped:
    """A drive left out of the backup, and why."""

    drive: str
    reason: str

    def __str__(self) -> str:
        return f"{self.drive}: skipped ({self.reason})"


@dataclass(frozen=True, slots=True)
class IncrementalPlan:
    """The transaction, the targets it needs and the drives left out."""

    transaction: Transaction
    targets: tuple[PlannedTarget, ...] = ()
    skipped: tuple[Skipped, ...] = ()


def pick_bitmap(node: Node, *, selected: str | None = None,
                preferred: Iterable[str] = ()) -> tuple[Bitmap | None, str]:
    """The bitmap a backup of ``node`` uses, or None and the reason there is none.

    ``selected`` (the bitmap under the cursor) wins when it is named; then the first of
    ``preferred`` (a policy's bitmap) that is usable; then the one active, recording, non-busy
    bitmap of the node. Two such bitmaps and no preference: the operator must choose.
    """
    if selected is not None:
        bm = node.bitmap(selected)
        if bm is not None:
            return bm, ""
    usable = [b for b in node.named_bitmaps if b.state is BitmapState.ACTIVE]
    for name in preferred:
        for bm in usable:
            if bm.name == name:
                return bm, ""
    if len(usable) == 1:
        return usable[0], ""
    if usable:
        names = ", ".join(str(b.name) for b in usable)
        return None, f"{len(usable)} active bitmaps ({names}): put the cursor on the one to use"
    if not node.named_bitmaps:
        return None, "no bitmap: add one (n) and take a full backup first"
    states = ", ".join(f"{b.name} {b.state.value}" for b in node.named_bitmaps)
    return None, f"no active bitmap ({states})"


def image_dir(node: Node) -> str:
    """The directory of the drive's image (``.`` when QEMU gives no plain path)."""
    path = node.file
    if not path or path.startswith("json:") or ":" in path.split("/", 1)[0]:
        return "."
    return str(PurePosixPath(path).parent)


def target_name(pattern: str, device: str, node: str, n: int, directory: str) -> str:
    """A target name from a pattern: ``{device}``, ``{node}``, ``{n}`` and ``{dir}`` (the
    directory of the drive's image). An unknown placeholder is kept as typed."""
    values = {"device": device, "node": node or device, "n": str(n), "dir": directory}
    out = pattern
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out


def _taken_paths(model: ConnectionModel) -> set[str]:
    return {n.file for n in model.nodes.values() if n.file}


def _node_for(path: str, taken: set[str]) -> str:
    base = _UNSAFE_NODE.sub("-", PurePosixPath(path).name.rsplit(".", 1)[0]) or "target"
    if not base[:1].isalpha():
        base = f"t-{base}"
    node, n = base, 2
    while node in taken:
        node, n = f"{base}-{n}", n + 1
    return node


def plan_incremental(
    model: ConnectionModel,
    devices: Iterable[str],
    *,
    selected: dict[str, str] | None = None,
    preferred: dict[str, list[str]] | None = None,
    pattern: str = DEFAULT_PATTERN,
    mode: str = GROUPED,
    exists: Callable[[str], bool] = os.path.exists,
) -> IncrementalPlan:
    """One ``blockdev-backup`` (sync incremental) per drive that has a usable bitmap.

    ``selected``/``preferred`` map a device to the bitmap under the cursor / the policies'
    bitmaps. ``{n}`` is the smallest number ≥ 1 whose path is neither an existing file
    (``exists``, on this machine), an image QEMU has open, nor another target of this plan; so
    names never collide. A pattern without ``{n}`` that collides skips the drive.
    """
    actions: list[Action] = []
    targets: list[PlannedTarget] = []
    skipped: list[Skipped] = []
    paths = _taken_paths(model)
    nodes_taken = set(model.nodes)
    jobs_taken = set(model.jobs)
    remote = parse_address_lenient(model.address).kind != "unix"
    busy = {j.node: j.id for j in model.active_jobs if j.node}
    for dev in devices:
        node = model.find_node(dev)
        if node is None:
            skipped.append(Skipped(dev, "no such drive"))
            continue
        if node.node_name in busy:
            skipped.append(Skipped(dev, f"job {busy[node.node_name]} is running on it"))
            continue
        bm, reason = pick_bitmap(node, selected=(selected or {}).get(dev),
                                 preferred=(preferred or {}).get(dev, ()))
        if bm is None or bm.name is None:
            skipped.append(Skipped(dev, reason))
            continue
        path, n = _free_path(pattern, dev, node, paths, exists)
        if path is None:
            skipped.append(Skipped(dev, f"the target name '{pattern}' is taken"))
            continue
        paths.add(path)
        tnode = _node_for(path, nodes_taken)
        nodes_taken.add(tnode)
        job = _free_id(f"{dev}-incr-{n}", jobs_taken)
        jobs_taken.add(job)
        targets.append(PlannedTarget(dev, path, tnode, node.size, unverified=remote))
        # by node name: while another job runs on the drive, its device name points at that
        # job's filter node, which has none of the drive's bitmaps
        actions.append(Action("blockdev-backup", {
            "device": node.node_name, "job-id": job, "sync": "incremental", "bitmap": bm.name,
            "target": tnode}))
    return IncrementalPlan(Transaction(tuple(actions), mode), tuple(targets), tuple(skipped))


def _free_path(pattern: str, dev: str, node: Node, taken: set[str],
               exists: Callable[[str], bool]) -> tuple[str | None, int]:
    directory = image_dir(node)
    for n in range(1, 10_000):
        path = target_name(pattern, dev, node.node_name, n, directory)
        if path not in taken and not exists(path):
            return path, n
        if "{n}" not in pattern:
            break
    return None, 0


def _free_id(base: str, taken: set[str]) -> str:
    jid, n = base, 2
    while jid in taken:
        jid, n = f"{base}-{n}", n + 1
    return jid


def pending(targets: Iterable[PlannedTarget], model: ConnectionModel) -> list[PlannedTarget]:
    """The planned targets QEMU does not have open yet."""
    return [t for t in targets if t.node not in model.nodes]


async def create_targets(conn: QMPConn, targets: Iterable[PlannedTarget],
                         model: ConnectionModel) -> list[Target]:
    """Create and attach every planned target not open yet; the ones created. Raises
    :class:`tui.core.txn.targets.TargetError` on the first failure (earlier ones stay open: the
    next send uses them)."""
    made = []
    for t in pending(targets, model):
        made.append(await create_target(conn, t.path, t.size, node=t.node))
    return made


async def release_targets(conn: QMPConn, targets: Iterable[Target]) -> dict[str, str]:
    """Detach the targets this console created, once their jobs ended (``blockdev-del`` flushes
    and closes each image). Returns path → why for each one that could not be released by us."""
    failures: dict[str, str] = {}
    for t in targets:
        try:
            if not await release_target(conn, t.node, t.file_node):
                failures[t.path] = "its node was already gone"
        except BitmapTuiError as exc:
            failures[t.path] = str(exc)
    return failures


def planned_nodes(targets: Iterable[PlannedTarget]) -> frozenset[str]:
    """The node names the planned targets will have (the checks accept them as targets)."""
    return frozenset(t.node for t in targets)


def describe_targets(targets: Iterable[PlannedTarget]) -> list[str]:
    """One line per target for the composer: what is created before sending."""
    return [f"{t.device}: creates {t.path} (node {t.node}) before sending" for t in targets]

