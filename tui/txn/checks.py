"""Pre-flight checks of a transaction against the live state, and its resolution for sending.

:func:`prepare` returns the transaction as it will be sent (bitmap actions addressed by node name,
job ids filled in) and a list of :class:`Finding`. Errors block sending; warnings need an explicit
confirmation; infos only explain what was changed. The rules are QEMU's (qmp.md §1.2, §3.3, §4.2)
checked up front, so the operator gets one line per problem instead of QEMU's first error only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tui.model.state import Bitmap, BitmapState, ConnectionModel, LinkState, Node
from tui.txn.model import BACKUP_TYPES, BITMAP_MODES, GROUPED, SYNC_MODES, Action, Transaction

ERROR = "error"
WARNING = "warning"
INFO = "info"

MAX_NAME = 1023
MAX_GRANULARITY = 2**31


@dataclass(frozen=True, slots=True)
class Finding:
    """One pre-flight result. ``index`` is the action's position (None: the whole transaction);
    ``fix`` is an equivalent action to offer instead (drive-backup → blockdev-backup)."""

    level: str
    message: str
    index: int | None = None
    fix: Action | None = None
    # Commands to run before the fixed action (e.g. blockdev-add of the target).
    fix_prepare: tuple[tuple[str, dict[str, Any]], ...] = ()

    def __str__(self) -> str:
        where = f"action {self.index + 1}: " if self.index is not None else ""
        return f"{self.level}: {where}{self.message}"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A transaction resolved for sending, and what the checks found."""

    transaction: Transaction
    findings: tuple[Finding, ...] = ()
    # Backup action index → (source node name, device or None, target image path or node).
    sources: dict[int, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors


class _Sim:
    """Bitmaps per node as the transaction's actions change them, in order."""

    def __init__(self, model: ConnectionModel) -> None:
        self.bitmaps: dict[tuple[str, str], Bitmap | None] = {}
        for node in model.nodes.values():
            for bm in node.named_bitmaps:
                assert bm.name is not None
                self.bitmaps[(node.node_name, bm.name)] = bm

    def get(self, node: str, name: str) -> tuple[bool, Bitmap | None]:
        key = (node, name)
        if key not in self.bitmaps:
            return False, None
        return True, self.bitmaps[key]


def blockdev_equivalent(action: Action, target_node: str | None = None) -> tuple[Action, tuple[tuple[str, dict[str, Any]], ...]]:
    """The ``blockdev-backup`` equivalent of a ``drive-backup`` and the ``blockdev-add`` commands
    that open its target first (mode existing: the image must already exist)."""
    d = dict(action.data)
    path = str(d.pop("target", ""))
    fmt = str(d.pop("format", "qcow2"))
    d.pop("mode", None)
    base = path.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "target"
    node = target_node or "".join(c if c.isalnum() or c in "-_." else "-" for c in base)
    if not node[:1].isalpha():
        node = f"t-{node}"
    d["target"] = node
    # backing null: the target is only written, its backing chain need not be opened (qmp.md §10)
    prep = (
        ("blockdev-add", {"driver": fmt, "node-name": node,
                          "file": {"driver": "file", "filename": path}, "backing": None}),
    )
    return Action("blockdev-backup", d), prep


def _bitmap_problem(bm: Bitmap, allow_inconsistent: bool = False) -> str | None:
    if bm.state is BitmapState.FROZEN:
        return f"bitmap '{bm.name}' is frozen (in use by another operation) and cannot be used"
    if bm.state is BitmapState.INCONSISTENT and not allow_inconsistent:
        return f"bitmap '{bm.name}' is inconsistent (not saved cleanly): it can only be removed"
    return None


def prepare(txn: Transaction, model: ConnectionModel, *, fill_job_ids: bool = True) -> Prepared:
    """Check ``txn`` against ``model`` and resolve it for sending (see module docstring)."""
    out: list[Finding] = []
    sources: dict[int, tuple[str, str | None]] = {}
    sim = _Sim(model)
    actions: list[Action] = []

    def err(i: int | None, msg: str) -> None:
        out.append(Finding(ERROR, msg, i))

    if model.state is not LinkState.CONNECTED:
        err(None, f"{model.name} is not connected ({model.state.value})")
    if not txn.actions:
        err(None, "the transaction has no actions")

    busy_nodes = {j.node for j in model.active_jobs if j.node}
    used_job_ids = {j.id for j in model.active_jobs}
    targets: dict[str, int] = {}

    def node_of(i: int, name: Any, what: str = "node") -> Node | None:
        if not isinstance(name, str) or not name:
            err(i, f"{what} is missing")
            return None
        node = model.find_node(name)
        if node is None:
            err(i, f"unknown {what} '{name}'")
        return node

    for i, action in enumerate(txn.actions):
        d = action.data
        if txn.completion_mode == GROUPED and action.type not in BACKUP_TYPES:
            err(i, f"{action.type} cannot be part of a grouped transaction (QEMU refuses it: "
                   "only backups support completion-mode grouped); send it separately in "
                   "individual mode")
        if action.type in BACKUP_TYPES:
            action = _check_backup(i, action, model, sim, out, busy_nodes, used_job_ids, targets,
                                   sources, fill_job_ids)
        elif action.type == "block-dirty-bitmap-merge":
            node = node_of(i, d.get("node"))
            srcs = d.get("bitmaps")
            new_srcs: list[Any] = []
            if not isinstance(srcs, list) or not srcs:
                err(i, "a merge needs at least one source bitmap (QEMU 7.2 crashes on an empty "
                       "merge)")
            else:
                for src in srcs:
                    if isinstance(src, dict):
                        snode = node_of(i, src.get("node"), "source node")
                        sname = src.get("name")
                        if snode is not None:
                            new_srcs.append({"node": snode.node_name, "name": sname})
                        else:
                            new_srcs.append(src)
                    else:
                        snode, sname = node, src
                        new_srcs.append(src)
                    if snode is not None and isinstance(sname, str):
                        known, bm = sim.get(snode.node_name, sname)
                        if not known:
                            err(i, f"unknown source bitmap '{sname}' on {snode.node_name}")
                        elif bm is not None and (p := _bitmap_problem(bm)):
                            err(i, p)
            if node is not None:
                target = d.get("target")
                known, bm = sim.get(node.node_name, str(target))
                if not known:
                    err(i, f"unknown target bitmap '{target}' on {node.node_name}")
                elif bm is not None and (p := _bitmap_problem(bm)):
                    err(i, p)
                action = action.with_data(node=node.node_name, bitmaps=new_srcs or srcs)
                _note_mapping(out, i, d.get("node"), node)
        elif action.is_bitmap:
            node = node_of(i, d.get("node"))
            name = d.get("name")
            if node is not None and isinstance(name, str):
                known, bm = sim.get(node.node_name, name)
                if action.type == "block-dirty-bitmap-add":
                    _check_add(i, action, node, known, out)
                    sim.bitmaps[(node.node_name, name)] = None
                elif not known:
                    err(i, f"unknown bitmap '{name}' on {node.node_name}")
                else:
                    if bm is not None and (
                        p := _bitmap_problem(bm, action.type == "block-dirty-bitmap-remove")
                    ):
                        err(i, p)
                    if action.type == "block-dirty-bitmap-remove":
                        del sim.bitmaps[(node.node_name, name)]
                action = action.with_data(node=node.node_name)
                _note_mapping(out, i, d.get("node"), node)
            elif node is not None:
                err(i, "bitmap name is missing")
        actions.append(action)
    return Prepared(Transaction(tuple(actions), txn.completion_mode), tuple(out), sources)


def _note_mapping(out: list[Finding], i: int, given: Any, node: Node) -> None:
    if given != node.node_name:
        out.append(Finding(INFO, f"'{given}' addressed by its node name '{node.node_name}' "
                                 "(a device name points at the backup filter while a backup runs)", i))


def _check_add(i: int, action: Action, node: Node, known: bool, out: list[Finding]) -> None:
    d = action.data
    name = str(d.get("name"))
    if not name:
        out.append(Finding(ERROR, "bitmap name cannot be empty", i))
    elif len(name.encode()) > MAX_NAME:
        out.append(Finding(ERROR, f"bitmap name is longer than {MAX_NAME} bytes", i))
    if known:
        out.append(Finding(ERROR, f"bitmap '{name}' already exists on {node.node_name}", i))
    gran = d.get("granularity")
    if gran is not None and (
        not isinstance(gran, int) or gran < 512 or gran > MAX_GRANULARITY or gran & (gran - 1)
    ):
        out.append(Finding(ERROR, "granularity must be a power of 2 between 512 and 2 GiB", i))
    if d.get("persistent") and node.driver != "qcow2":
        out.append(Finding(ERROR, f"persistent bitmaps need a qcow2 node ({node.node_name} is "
                                  f"{node.driver})", i))


def _check_backup(
    i: int,
    action: Action,
    model: ConnectionModel,
    sim: _Sim,
    out: list[Finding],
    busy_nodes: set[str],
    used_job_ids: set[str],
    targets: dict[str, int],
    sources: dict[int, tuple[str, str | None]],
    fill_job_ids: bool,
) -> Action:
    d = action.data

    def err(msg: str) -> None:
        out.append(Finding(ERROR, msg, i))

    dev = d.get("device")
    node = model.find_node(dev) if isinstance(dev, str) and dev else None
    if not isinstance(dev, str) or not dev:
        err("device is missing")
    elif node is None:
        err(f"unknown device or node '{dev}'")
    else:
        sources[i] = (node.node_name, node.device)
        if node.node_name in busy_nodes:
            err(f"{node.node_name} is busy: a block job is already running on it")
    is_device = node is not None and node.device == dev

    # Job id: QEMU's default is the device name, which a node-name source does not have.
    jid = action.job_id
    if jid is None:
        if fill_job_ids and isinstance(dev, str) and dev:
            base = dev if is_device else f"{dev}-backup"
            jid, n = base, 2
            while jid in used_job_ids:
                jid, n = f"{base}-{n}", n + 1
            action = action.with_data(job_id=jid)
            out.append(Finding(INFO, f"job-id '{jid}' filled in", i))
        elif node is not None and not is_device:
            err(f"a backup of node '{dev}' needs a job-id (QEMU: Invalid job ID '')")
    if jid is not None:
        if jid in used_job_ids:
            err(f"job id '{jid}' is already in use")
        used_job_ids.add(jid)

    sync = d.get("sync")
    bitmap = d.get("bitmap")
    mode = d.get("bitmap-mode")
    if sync not in SYNC_MODES:
        err(f"sync must be one of {', '.join(SYNC_MODES)}, not {sync!r}")
    if mode is not None and mode not in BITMAP_MODES:
        err(f"bitmap-mode must be one of {', '.join(BITMAP_MODES)}, not {mode!r}")
    if sync in ("incremental", "bitmap") and not bitmap:
        err(f"sync '{sync}' needs a bitmap")
    if sync == "incremental" and mode not in (None, "on-success"):
        err("sync 'incremental' only works with bitmap-mode 'on-success' (or none given)")
    if bitmap and sync in ("bitmap", "full", "top") and mode is None:
        err(f"a bitmap with sync '{sync}' needs a bitmap-mode (on-success, always or never)")
    if bitmap and sync == "none":
        err("sync 'none' does not produce meaningful bitmap outputs")
    if sync in ("full", "top") and mode == "never":
        err(f"bitmap-mode 'never' has no effect with sync '{sync}'")
    if mode is not None and not bitmap:
        err("bitmap-mode given without a bitmap")
    speed = d.get("speed")
    if speed is not None and (not isinstance(speed, int) or speed < 0):
        err("speed must be a non-negative number of bytes per second")
    if bitmap and node is not None:
        known, bm = sim.get(node.node_name, str(bitmap))
        if not known:
            err(f"unknown bitmap '{bitmap}' on {node.node_name}")
        elif bm is not None and (p := _bitmap_problem(bm)):
            err(p)

    target = d.get("target")
    if not isinstance(target, str) or not target:
        err("target is missing")
    else:
        tkey = target
        if action.type == "blockdev-backup":
            tnode = model.find_node(target)
            if tnode is None:
                err(f"unknown target node '{target}' (blockdev-add it first)")
            else:
                tkey = tnode.node_name
                if node is not None and tnode.node_name == node.node_name:
                    err("the target is the source itself")
        if tkey in targets:
            err(f"writes the same target as action {targets[tkey] + 1} ({target})")
        else:
            targets[tkey] = i
    if d.get("auto-finalize") is False:
        out.append(Finding(WARNING, "auto-finalize false: the job waits in 'pending' until "
                                    "job-finalize is run; its verdict waits for that", i))
    if action.type == "drive-backup":
        fix, prep = blockdev_equivalent(action)
        out.append(Finding(
            WARNING,
            "drive-backup is deprecated; the blockdev-backup equivalent opens the target with "
            f"blockdev-add first and backs up to node '{fix.data['target']}'",
            i, fix, prep,
        ))
    return action
