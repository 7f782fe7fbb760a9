"""Pre-flight checks of a transaction against the live state, and its resolution for sending.

:func:`prepare` returns the transaction as it will be sent (bitmap actions addressed by node name,
job ids filled in) and a list of :class:`Finding`. Errors block sending; warnings (a risk to
data) need an explicit confirmation; notices (e.g. a deprecated command, with its current
equivalent) are shown and need none; infos only explain what was changed. QEMU's own rules are checked up front, so the
operator gets one line per problem instead of QEMU's first error only, and the combinations that
make QEMU 7.2 abort are refused before anything is sent (docs/qemu-bitmap-semantics.md).

The actions are checked in order against a simulation (:class:`_Sim`) of what the earlier actions
of the same transaction did: a source already backed up, a bitmap frozen by an earlier backup, a
target written, a bitmap added, cleared or removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tui.core.base.limits import bitmap_name_problem, granularity_problem
from tui.core.model.state import Bitmap, BitmapState, ConnectionModel, LinkState, Node
from tui.core.txn.model import BACKUP_TYPES, BITMAP_MODES, GROUPED, SYNC_MODES, Action, Transaction

ERROR = "error"
WARNING = "warning"
NOTICE = "notice"
INFO = "info"

# QEMU's job type of blockdev-create.
CREATE_JOB_TYPE = "create"


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
    # Backup action index → (source node name, device or None).
    sources: dict[int, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    @property
    def notices(self) -> list[Finding]:
        return [f for f in self.findings if f.level == NOTICE]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True, slots=True)
class _BackupSource:
    """A source node an earlier backup action of the transaction reads."""

    index: int
    by_device: bool


class _Sim:
    """The live state as the transaction's earlier actions leave it, and the findings so far."""

    def __init__(self, model: ConnectionModel, fill_job_ids: bool,
                 planned: frozenset[str] = frozenset()) -> None:
        self.model = model
        self.fill_job_ids = fill_job_ids
        self.planned = planned
        self.findings: list[Finding] = []
        self.bitmaps: dict[tuple[str, str], Bitmap | None] = {}
        for node in model.nodes.values():
            for bm in node.named_bitmaps:
                assert bm.name is not None
                self.bitmaps[(node.node_name, bm.name)] = bm
        # what earlier actions of this transaction did, each with the action's index
        self.removed: dict[tuple[str, str], int] = {}
        self.frozen_by: dict[tuple[str, str], int] = {}
        self.backed_up: dict[str, list[_BackupSource]] = {}
        self.targets: dict[str, int] = {}
        self.busy_nodes = {j.node for j in model.active_jobs if j.node}
        self.job_ids = {j.id for j in model.active_jobs}
        self.sources: dict[int, tuple[str, str | None]] = {}

    def error(self, i: int | None, msg: str) -> None:
        self.findings.append(Finding(ERROR, msg, i))

    def note(self, level: str, i: int, msg: str, fix: Action | None = None,
             fix_prepare: tuple[tuple[str, dict[str, Any]], ...] = ()) -> None:
        self.findings.append(Finding(level, msg, i, fix, fix_prepare))

    def get(self, node: str, name: str) -> tuple[bool, Bitmap | None]:
        """(exists now, the live bitmap or None when an earlier action added it)."""
        key = (node, name)
        if key not in self.bitmaps:
            return False, None
        return True, self.bitmaps[key]

    def node_of(self, i: int, name: Any, what: str = "node") -> Node | None:
        if not isinstance(name, str) or not name:
            self.error(i, f"{what} is missing")
            return None
        node = self.model.find_node(name)
        if node is None:
            self.error(i, f"unknown {what} '{name}'")
        return node

    def bitmap_usable(self, i: int, node: str, name: str, *, role: str = "bitmap",
                      allow_inconsistent: bool = False) -> bool:
        """Check that bitmap ``name`` on ``node`` exists and can be used by action ``i`` at this
        point of the transaction; one error when not."""
        key = (node, name)
        known, bm = self.get(node, name)
        if not known:
            if key in self.removed:
                self.error(i, f"unknown {role} '{name}' on {node}: action "
                              f"{self.removed[key] + 1} of this transaction removes it")
            else:
                self.error(i, f"unknown {role} '{name}' on {node}")
            return False
        if key in self.frozen_by:
            self.error(i, f"{role} '{name}' on {node} is used by the backup of action "
                          f"{self.frozen_by[key] + 1} of this transaction: it is frozen until "
                          "that job ends (one bitmap, one job)")
            return False
        if bm is not None and (p := _bitmap_problem(bm, allow_inconsistent)):
            self.error(i, p)
            return False
        return True


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
    # backing null: the target is only written, its backing chain need not be opened
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


def prepare(txn: Transaction, model: ConnectionModel, *, fill_job_ids: bool = True,
            planned: frozenset[str] = frozenset()) -> Prepared:
    """Check ``txn`` against ``model`` and resolve it for sending (see module docstring).
    ``planned`` are target node names created right before sending (accepted as targets)."""
    sim = _Sim(model, fill_job_ids, planned)
    _check_whole(sim, txn)
    actions = [_check_action(sim, i, action, txn.completion_mode)
               for i, action in enumerate(txn.actions)]
    return Prepared(Transaction(tuple(actions), txn.completion_mode), tuple(sim.findings),
                    sim.sources)


def _check_whole(sim: _Sim, txn: Transaction) -> None:
    """What concerns the transaction as a whole: the link, emptiness, a running blockdev-create."""
    model = sim.model
    if model.state is not LinkState.CONNECTED:
        sim.error(None, f"{model.name} is not connected ({model.state.value})")
    if not txn.actions:
        sim.error(None, "the transaction has no actions")
    creating = [j.id for j in model.active_jobs if j.type == CREATE_JOB_TYPE]
    if creating:
        sim.error(None, f"blockdev-create job {', '.join(creating)} is running: QEMU 7.2 aborts "
                        "when block nodes are queried meanwhile (and a transaction is followed "
                        "by querying them); wait until it has ended")


def _check_action(sim: _Sim, i: int, action: Action, mode: str) -> Action:
    """Check one action against the state the earlier ones left; the action as it will be sent."""
    if mode == GROUPED and action.type not in BACKUP_TYPES:
        sim.error(i, f"{action.type} cannot be part of a grouped transaction (QEMU refuses it: "
                     "only backups support completion-mode grouped); send it separately in "
                     "individual mode")
    if action.type in BACKUP_TYPES:
        return _check_backup(sim, i, action)
    if action.type == "block-dirty-bitmap-merge":
        return _check_merge(sim, i, action)
    if action.is_bitmap:
        return _check_bitmap_action(sim, i, action)
    return action


# ---------------------------------------------------------------------- bitmap actions


def _check_merge(sim: _Sim, i: int, action: Action) -> Action:
    d = action.data
    node = sim.node_of(i, d.get("node"))
    srcs = d.get("bitmaps")
    new_srcs: list[Any] = []
    if not isinstance(srcs, list) or not srcs:
        sim.error(i, "a merge needs at least one source bitmap (QEMU 7.2 crashes on an empty "
                     "merge)")
    else:
        new_srcs = [_merge_source(sim, i, node, src) for src in srcs]
    if node is None:
        return action
    target = str(d.get("target"))
    if sim.bitmap_usable(i, node.node_name, target, role="target bitmap"):
        sim.bitmaps[(node.node_name, target)] = None  # changed: the live count no longer holds
    _note_mapping(sim, i, d.get("node"), node)
    return action.with_data(node=node.node_name, bitmaps=new_srcs or srcs)


def _merge_source(sim: _Sim, i: int, node: Node | None, src: Any) -> Any:
    """Check one merge source; the source as it will be sent (its node by node name)."""
    if isinstance(src, dict):
        snode = sim.node_of(i, src.get("node"), "source node")
        sname = src.get("name")
        resolved: Any = {"node": snode.node_name, "name": sname} if snode is not None else src
    else:
        snode, sname, resolved = node, src, src
    if snode is not None and isinstance(sname, str):
        sim.bitmap_usable(i, snode.node_name, sname, role="source bitmap")
    return resolved


def _check_bitmap_action(sim: _Sim, i: int, action: Action) -> Action:
    """add, clear, enable, disable, remove."""
    d = action.data
    node = sim.node_of(i, d.get("node"))
    name = d.get("name")
    if node is None:
        return action
    if not isinstance(name, str):
        sim.error(i, "bitmap name is missing")
        return action
    key = (node.node_name, name)
    if action.type == "block-dirty-bitmap-add":
        _check_add(sim, i, action, node)
        sim.bitmaps[key] = None
        sim.removed.pop(key, None)
    elif sim.bitmap_usable(i, node.node_name, name,
                           allow_inconsistent=action.type == "block-dirty-bitmap-remove"):
        if action.type == "block-dirty-bitmap-remove":
            del sim.bitmaps[key]
            sim.removed[key] = i
    _note_mapping(sim, i, d.get("node"), node)
    return action.with_data(node=node.node_name)


def _note_mapping(sim: _Sim, i: int, given: Any, node: Node) -> None:
    if given != node.node_name:
        sim.note(INFO, i, f"'{given}' addressed by its node name '{node.node_name}' "
                          "(a device name points at the backup filter while a backup runs)")


def _check_add(sim: _Sim, i: int, action: Action, node: Node) -> None:
    d = action.data
    name = str(d.get("name"))
    problem = bitmap_name_problem(name)
    if problem:
        sim.error(i, problem)
    if (node.node_name, name) in sim.bitmaps:
        sim.error(i, f"bitmap '{name}' already exists on {node.node_name}")
    gran = d.get("granularity")
    gran_problem = granularity_problem(gran) if gran is not None else None
    if gran_problem:
        sim.error(i, gran_problem)
    if d.get("persistent") and node.driver != "qcow2":
        sim.error(i, f"persistent bitmaps need a qcow2 node ({node.node_name} is {node.driver})")


# ---------------------------------------------------------------------- backups


def _check_backup(sim: _Sim, i: int, action: Action) -> Action:
    """One backup action, step by step; the action with its job id filled in."""
    node, by_device = _check_source(sim, i, action.data.get("device"))
    action = _check_job_id(sim, i, action, node, by_device)
    _check_sync_options(sim, i, action.data)
    _check_backup_bitmap(sim, i, action.data, node)
    _check_target(sim, i, action, node)
    _warn_backup(sim, i, action)
    if node is not None:
        sim.backed_up.setdefault(node.node_name, []).append(_BackupSource(i, by_device))
    return action


def _check_source(sim: _Sim, i: int, dev: Any) -> tuple[Node | None, bool]:
    """The source node and whether it is addressed by its device name."""
    if not isinstance(dev, str) or not dev:
        sim.error(i, "device is missing")
        return None, False
    node = sim.model.find_node(dev)
    if node is None:
        sim.error(i, f"unknown device or node '{dev}'")
        return None, False
    sim.sources[i] = (node.node_name, node.device)
    by_device = node.device == dev
    if node.node_name in sim.busy_nodes:
        sim.error(i, f"{node.node_name} is busy: a block job is already running on it")
    earlier = sim.backed_up.get(node.node_name, [])
    if earlier and (by_device or any(e.by_device for e in earlier)):
        sim.error(i, f"{node.node_name} is already backed up by action {earlier[0].index + 1} of "
                     "this transaction, and two backups of one drive by device name in one "
                     "transaction abort QEMU 7.2: address both by node name "
                     f"('{node.node_name}') or send them separately")
    written = sim.targets.get(node.node_name)
    if written is not None:
        sim.error(i, f"{node.node_name} is the target action {written + 1} writes: a backup "
                     "cannot read what the same transaction overwrites")
    return node, by_device


def _check_job_id(sim: _Sim, i: int, action: Action, node: Node | None, by_device: bool) -> Action:
    """QEMU's default job id is the device name, which a node-name source does not have."""
    dev = action.data.get("device")
    jid = action.job_id
    if jid is None:
        if sim.fill_job_ids and isinstance(dev, str) and dev:
            base = dev if by_device else f"{dev}-backup"
            jid, n = base, 2
            while jid in sim.job_ids:
                jid, n = f"{base}-{n}", n + 1
            action = action.with_data(job_id=jid)
            sim.note(INFO, i, f"job-id '{jid}' filled in")
        elif node is not None and not by_device:
            sim.error(i, f"a backup of node '{dev}' needs a job-id (QEMU: Invalid job ID '')")
    if jid is not None:
        if jid in sim.job_ids:
            sim.error(i, f"job id '{jid}' is already in use")
        sim.job_ids.add(jid)
    return action


def _check_sync_options(sim: _Sim, i: int, d: dict[str, Any]) -> None:
    """sync, bitmap-mode and speed as QEMU's backup accepts them."""
    sync, bitmap, mode = d.get("sync"), d.get("bitmap"), d.get("bitmap-mode")
    problems = [
        (sync not in SYNC_MODES, f"sync must be one of {', '.join(SYNC_MODES)}, not {sync!r}"),
        (mode is not None and mode not in BITMAP_MODES,
         f"bitmap-mode must be one of {', '.join(BITMAP_MODES)}, not {mode!r}"),
        (sync in ("incremental", "bitmap") and not bitmap, f"sync '{sync}' needs a bitmap"),
        (sync == "incremental" and mode not in (None, "on-success"),
         "sync 'incremental' only works with bitmap-mode 'on-success' (or none given)"),
        (bool(bitmap) and sync in ("bitmap", "full", "top") and mode is None,
         f"a bitmap with sync '{sync}' needs a bitmap-mode (on-success, always or never)"),
        (bool(bitmap) and sync == "none", "sync 'none' does not produce meaningful bitmap outputs"),
        (sync in ("full", "top") and mode == "never",
         f"bitmap-mode 'never' has no effect with sync '{sync}'"),
        (mode is not None and not bitmap, "bitmap-mode given without a bitmap"),
    ]
    for bad, msg in problems:
        if bad:
            sim.error(i, msg)
    speed = d.get("speed")
    if speed is not None and (not isinstance(speed, int) or speed < 0):
        sim.error(i, "speed must be a non-negative number of bytes per second")


def _check_backup_bitmap(sim: _Sim, i: int, d: dict[str, Any], node: Node | None) -> None:
    """The backup's bitmap exists at this point of the transaction and no earlier job holds it;
    from here on it is frozen for the rest of the transaction."""
    bitmap = d.get("bitmap")
    if not bitmap or node is None:
        return
    name = str(bitmap)
    if sim.bitmap_usable(i, node.node_name, name):
        sim.frozen_by[(node.node_name, name)] = i
        _warn_source_bitmap(sim, i, node, name, str(d.get("sync")))


def _warn_source_bitmap(sim: _Sim, i: int, node: Node, name: str, sync: str) -> None:
    """A disabled source bitmap has not recorded the writes since it was disabled (the backup
    misses them); an empty one copies nothing."""
    _known, bm = sim.get(node.node_name, name)
    if bm is None or sync not in ("incremental", "bitmap"):
        return
    if bm.state is BitmapState.DISABLED:
        sim.note(WARNING, i, f"bitmap '{name}' on {node.node_name} is disabled: writes since it "
                             "was disabled are not in it, so this backup misses them")
    elif bm.count == 0:
        sim.note(WARNING, i, f"bitmap '{name}' on {node.node_name} is empty: the backup copies "
                             "nothing (an image with no changes)")


def _check_target(sim: _Sim, i: int, action: Action, node: Node | None) -> None:
    target = action.data.get("target")
    if not isinstance(target, str) or not target:
        sim.error(i, "target is missing")
        return
    tkey = target
    if action.type == "blockdev-backup":
        tnode = sim.model.find_node(target)
        if tnode is None and target in sim.planned:
            pass  # created (blockdev-create, blockdev-add) right before sending
        elif tnode is None:
            sim.error(i, f"unknown target node '{target}' (blockdev-add it first)")
        else:
            tkey = tnode.node_name
            if node is not None and tnode.node_name == node.node_name:
                sim.error(i, "the target is the source itself")
            elif tnode.node_name in sim.backed_up:
                first = sim.backed_up[tnode.node_name][0].index
                sim.error(i, f"the target {tnode.node_name} is the source action {first + 1} "
                             "backs up: it would be overwritten while it is read")
    if tkey in sim.targets:
        sim.error(i, f"writes the same target as action {sim.targets[tkey] + 1} ({target})")
    else:
        sim.targets[tkey] = i


def _warn_backup(sim: _Sim, i: int, action: Action) -> None:
    if action.data.get("auto-finalize") is False:
        sim.note(WARNING, i, "auto-finalize false: the job waits in 'pending' until job-finalize "
                             "is run; its verdict waits for that")
    if action.type == "drive-backup":
        fix, prep = blockdev_equivalent(action)
        sim.note(NOTICE, i, "drive-backup is deprecated (accepted): its blockdev equivalent is "
                            f"blockdev-add of the target, then blockdev-backup to node "
                            f"'{fix.data['target']}' (f on the action)", fix, prep)
