"""Retention: which points a policy keeps, and the steps that remove the others.

Selection (:func:`select`) follows Proxmox Backup Server: newest first, ``last`` keeps N points;
then ``daily``/``weekly``/``monthly`` each keep the newest point of the last N days/ISO weeks/
months that have a point not already kept by an earlier rule. Only restorable points take part,
and the newest restorable point of each drive is always kept (the next incremental builds on it).

Removal, per chain:

- a chain none of whose points is kept is deleted whole (``delete-chain``);
- in a kept chain, the points older than its oldest kept point are removed by merging the
  incrementals up to that point into the chain's base file with ``qemu-img commit`` (``merge``):
  the base file then holds the kept point, the next image is rebased onto it (``qemu-img rebase
  -u``: its data does not change) and the merged files are deleted. Points between two kept ones
  stay (a kept point needs them).

Each step is written to the ledger (with the points it destroys) before anything is done, and
advanced after each part; every part can be repeated, so a step interrupted at any moment is
finished by the next prune. Only files the ledger recorded are deleted, and only when they are
still the same file (device, inode, size, modification time, real path) as when the step was
planned.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from tui.core.base.audit import AuditError, AuditLog
from tui.core.base.errors import LocalFileError
from tui.core.base.programs import QEMU_IMG
from tui.core.chains.cleanup import not_ours
from tui.core.chains.lock import run_lock
from tui.core.chains.points import BUSY, Point, list_points
from tui.core.chains.policy import Keep, Policy
from tui.core.ledger.points_repository import PointsLedger
from tui.core.ledger.rows import PruneState, PruneStepRow
from tui.core.txn.targets import file_identity

_PERIODS = (("daily", "%Y/%m/%d"), ("weekly", "%G/%V"), ("monthly", "%Y/%m"))


class PruneError(LocalFileError):
    """A prune step could not be done (it stays recorded and is retried by the next prune)."""


# ---------------------------------------------------------------------------------- selection


# The audit log's connection for changes made on this machine (not sent to a QEMU).
LOCAL = "local"


def select(points: list[Point], keep: Keep) -> dict[int, str]:
    """image id → the rule that keeps it, for one drive's restorable points."""
    newest_first = sorted((p for p in points if p.restorable), key=lambda p: p.time, reverse=True)
    marks: dict[int, str] = {}  # image id → rule, or "" (removed by a rule's period)
    rules: list[tuple[str, int, str | None]] = [("last", keep.last, None)]
    rules += [(rule, getattr(keep, rule), fmt) for rule, fmt in _PERIODS]
    for rule, count, fmt in rules:

        def period(p: Point, fmt: str | None = fmt) -> str:
            """The point's period for this rule (each point its own for ``last``)."""
            return str(p.image_id) if fmt is None else time.strftime(fmt, time.localtime(p.time))

        if count <= 0:
            continue
        already = {period(p) for p in newest_first if marks.get(p.image_id)}
        included: set[str] = set()
        for p in newest_first:
            if p.image_id in marks:
                continue
            sel = period(p)
            if sel in already:
                continue
            if sel not in included:
                if len(included) >= count:
                    break
                included.add(sel)
                marks[p.image_id] = rule
            else:
                marks[p.image_id] = ""
    kept = {i: r for i, r in marks.items() if r}
    if newest_first and newest_first[0].image_id not in kept:
        kept[newest_first[0].image_id] = "newest"  # the next incremental's base
    return kept


# ---------------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class FileId:
    """What a file was when its deletion was planned."""

    path: str
    real: str
    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> FileId | None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        return cls(path, os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class Step:
    """One planned step on one drive's chain."""

    action: str  # "delete-chain" or "merge"
    drive: str
    removes: list[Point]  # the points it destroys
    delete: list[str]  # files deleted at its end
    base: str | None = None  # merge: the file that receives the data
    top: Point | None = None  # merge: the point the base file holds afterwards
    rebase: str | None = None  # merge: the next file, whose backing file becomes ``base``
    holder_id: int | None = None  # merge: the image whose file is ``base``

    def describe(self) -> str:
        pts = ", ".join(str(p.point) for p in self.removes)
        files = ", ".join(os.path.basename(f) for f in self.delete)
        if self.action == "delete-chain":
            return f"{self.drive}: delete the chain of points {pts} (files {files})"
        assert self.top is not None and self.base is not None
        text = (f"{self.drive}: remove points {pts}: qemu-img commit {os.path.basename(self.top.image)}"
                f" into {os.path.basename(self.base)} (it then holds point {self.top.point})")
        if self.rebase:
            text += f", rebase {os.path.basename(self.rebase)} onto it"
        return text + f", delete {files}"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "drive": self.drive,
                "removes": [p.point for p in self.removes], "delete": self.delete,
                "base": self.base, "holds": self.top.point if self.top else None,
                "rebase": self.rebase, "text": self.describe()}


@dataclass
class DrivePrune:
    drive: str
    kept: dict[int, str]  # point number → rule ("needed" for points a kept point needs)
    removed: list[int]
    steps: list[Step] = field(default_factory=list)


@dataclass
class PrunePlan:
    policy: str
    drives: list[DrivePrune] = field(default_factory=list)
    unfinished: list[PruneStepRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[Step]:
        return [s for d in self.drives for s in d.steps]

    def lines(self) -> list[str]:
        out = [f"finish the interrupted step {s.id} ({s.action} on {s.drive}, {s.state})"
               for s in self.unfinished]
        for d in self.drives:
            kept = ", ".join(f"{n} ({r})" for n, r in sorted(d.kept.items()))
            out.append(f"{d.drive}: keep points {kept or 'none'}; remove "
                       f"{', '.join(map(str, d.removed)) or 'none'}")
            out += [f"  {s.describe()}" for s in d.steps]
        return out + [f"error: {e}" for e in self.errors]

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "unfinished": [s.id for s in self.unfinished],
            "drives": [{"drive": d.drive, "keep": {str(k): v for k, v in sorted(d.kept.items())},
                        "remove": d.removed, "steps": [s.to_dict() for s in d.steps]}
                       for d in self.drives],
            "errors": self.errors,
        }


def _chains(points: list[Point], ledger: PointsLedger) -> dict[int, list[Point]]:
    """chain id → its live (restorable) points, oldest first."""
    out: dict[int, list[Point]] = {}
    for p in points:
        if not p.restorable:
            continue
        im = ledger.image(p.image_id)
        if im is None or im.chain_id is None:
            continue
        out.setdefault(im.chain_id, []).append(p)
    return out


def plan_drive(ledger: PointsLedger, points: list[Point], keep: Keep, drive: str) -> DrivePrune:
    """The steps that bring one drive's points to what ``keep`` keeps."""
    mine = [p for p in points if p.drive == drive]
    kept_ids = select(mine, keep)
    restorable = [p for p in mine if p.restorable]
    # The next incremental's base: the drive's newest point (in the ledger's order).
    newest = max(restorable, key=lambda p: p.point).image_id if restorable else None
    by_id = {p.image_id: p for p in mine}
    result = DrivePrune(drive, {by_id[i].point: r for i, r in kept_ids.items()}, [])
    for _chain_id, live in sorted(_chains(mine, ledger).items()):
        keep_idx = [i for i, p in enumerate(live) if p.image_id in kept_ids]
        if not keep_idx:
            files = sorted({f for p in live for f in p.chain})
            result.steps.append(Step("delete-chain", drive, live, files))
            result.removed += [p.point for p in live]
            continue
        first, last = keep_idx[0], keep_idx[-1]
        for p in live[first:last + 1]:
            if p.image_id not in kept_ids:
                result.kept[p.point] = f"needed by point {live[last].point}"
        if live[first].image_id == newest and first > 0:
            # The newest point's file is the next incremental's backing file: it stays, so the
            # base file takes the point before it, which is then needed.
            first -= 1
            result.kept[live[first].point] = f"needed by point {live[first + 1].point}"
        if first == 0:
            continue
        top = live[first]
        base = live[0].chain[0]
        holder = _base_image_id(ledger, live[0])
        nxt = live[first + 1].image if first + 1 < len(live) else None
        merged = [p.image for p in live[1:first + 1]]
        result.steps.append(Step("merge", drive, live[:first], merged, base=base, top=top,
                                 rebase=nxt, holder_id=holder))
        result.removed += [p.point for p in live[:first]]
    result.removed.sort()
    return result


def _base_image_id(ledger: PointsLedger, oldest: Point) -> int:
    """The image (the chain's full) whose file is the chain's base."""
    im = ledger.image(oldest.image_id)
    assert im is not None
    while im.parent_id is not None:
        parent = ledger.image(im.parent_id)
        assert parent is not None
        im = parent
    return im.id


def plan_prune(ledger: PointsLedger, policy: Policy) -> PrunePlan:
    """What ``prune`` would do for ``policy`` (nothing is changed)."""
    plan = PrunePlan(policy.name)
    if policy.keep is None:
        plan.errors.append(f"policy {policy.name} has no 'keep' rules")
        return plan
    plan.unfinished = [s for s in ledger.prune_steps(policy.connection, open_only=True)
                       if s.drive in policy.drives]
    points = list_points(ledger, policy=policy.name, connection=policy.connection)
    for drive in policy.drives:
        if any(p.drive == drive and p.verdict == BUSY for p in points):
            continue  # its unfinished step is finished first; plan it on the next prune
        plan.drives.append(plan_drive(ledger, points, policy.keep, drive))
    return plan


# ---------------------------------------------------------------------------------- doing


def _qemu_img(argv: list[str]) -> None:
    res = subprocess.run([QEMU_IMG, *argv], capture_output=True, text=True, timeout=3600,
                         check=False)
    if res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines()
        raise PruneError(f"qemu-img {argv[0]}: {lines[-1] if lines else res.returncode}")


def delete_checked(ledger: PointsLedger, ident: dict[str, Any], open_files: set[str],
                   audit: AuditLog | None = None) -> str:
    """Delete one file if it is still the one the step planned to delete; what happened."""
    path = ident["path"]
    why = not_ours(ledger, path)
    if why is not None and FileId.of(path) is not None:
        raise PruneError(f"{path}: {why}; not deleted")
    now = FileId.of(path)
    if now is None:
        return f"already gone {path}"
    if os.path.realpath(path) in open_files or path in open_files:
        raise PruneError(f"{path} is open in QEMU; not deleted")
    same = (now.real == ident["real"] and now.dev == ident["dev"] and now.ino == ident["ino"]
            and now.size == ident["size"] and now.mtime_ns == ident["mtime_ns"])
    if not same:
        raise PruneError(f"{path} changed since the prune was planned; not deleted")
    if audit is not None:
        audit.unlink(path, connection=LOCAL)
    else:
        os.unlink(path)
    return f"deleted {path}"


def _note_identity(ledger: PointsLedger, path: str) -> None:
    """After prune itself changed a file of ours (commit, rebase): record it as it is now, so
    the ledger still knows the file as its own when a later prune deletes it."""
    st = file_identity(path)
    if st is None:
        return
    real = os.path.realpath(path)
    for im in ledger.images():
        if os.path.realpath(im.path) == real and im.file_ino == st.st_ino:
            ledger.set_file_identity(im.id, st)


def record_step(ledger: PointsLedger, connection: str, step: Step) -> int:
    """Write the step (and the points it destroys) before any of it is done."""
    idents = []
    for f in step.delete:
        fid = FileId.of(f)
        if fid is None:
            raise PruneError(f"{f} is missing; run `chains` to see the drive's state")
        idents.append(asdict(fid))
    plan = {"files": idents, "base": step.base, "top": step.top.image if step.top else None,
            "top_id": step.top.image_id if step.top else None, "rebase": step.rebase,
            "holder_id": step.holder_id,
            "image_ids": [p.image_id for p in step.removes],
            "deleted_ids": [p.image_id for p in step.removes] if step.action == "delete-chain"
            else [p.image_id for p in step.removes[1:]] + ([step.top.image_id] if step.top else [])}
    return ledger.new_prune_step(connection, step.drive, step.action, plan,
                                 [p.image_id for p in step.removes])


def _audited(audit: AuditLog | None, command: str, arguments: dict[str, Any]
             ) -> contextlib.AbstractContextManager[None]:
    """The change between its audit intent and outcome (nothing to record without a log)."""
    if audit is None:
        return contextlib.nullcontext()
    return audit.change(LOCAL, command, arguments)


def finish_step(ledger: PointsLedger, row: PruneStepRow, *, open_files: Iterable[str] = (),
                audit: AuditLog | None = None) -> list[str]:
    """Do (or finish) one recorded step from its recorded state; lines saying what was done.
    Every file rewritten or deleted is audited first (write-ahead)."""
    plan, state, lines = row.plan, row.state, []
    ledger.take_prune_step(row.id)
    try:
        if row.action == "merge" and state is PruneState.PLANNED:
            with _audited(audit, "qemu-img commit", {"top": plan["top"], "base": plan["base"]}):
                _qemu_img(["commit", "-q", "-d", "-f", "qcow2", "-b", plan["base"], plan["top"]])
            _note_identity(ledger, plan["base"])  # the merge changed it: still ours
            ledger.advance_prune_step(row.id, PruneState.COMMITTED,
                                      holder=(plan["top_id"], plan["holder_id"]))
            lines.append(f"committed {os.path.basename(plan['top'])} into {plan['base']}")
            state = PruneState.COMMITTED
        if row.action == "merge" and state is PruneState.COMMITTED:
            if plan["rebase"]:
                with _audited(audit, "qemu-img rebase",
                              {"image": plan["rebase"], "backing": plan["base"]}):
                    _qemu_img(["rebase", "-q", "-u", "-f", "qcow2", "-b", plan["base"], "-F",
                               "qcow2", plan["rebase"]])
                _note_identity(ledger, plan["rebase"])
                lines.append(f"rebased {os.path.basename(plan['rebase'])} onto {plan['base']}")
            ledger.advance_prune_step(row.id, PruneState.REBASED)
            state = PruneState.REBASED
        opened = set(open_files)
        for ident in plan["files"]:
            lines.append(delete_checked(ledger, ident, opened, audit))
        ledger.advance_prune_step(row.id, PruneState.DONE, deleted=plan["deleted_ids"])
    except (PruneError, OSError, AuditError) as exc:
        ledger.set_prune_error(row.id, str(exc))
        raise PruneError(f"step {row.id} ({row.action} on {row.drive}): {exc}") from None
    finally:
        ledger.release_prune_steps([row.id])
    return lines


@dataclass
class PruneResult:
    plan: PrunePlan
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.plan.errors

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "done": self.done, "failed": self.failed}


def prune(ledger: PointsLedger, policy: Policy, *, open_files: Iterable[str] = (),
          audit: AuditLog | None = None, wait: float = 0.0,
          on_note: Callable[[str], None] | None = None) -> PruneResult:
    """Finish interrupted steps, then plan and do the policy's retention, step by step, holding
    the connection's run lock (waiting up to ``wait`` seconds for another run to end)."""
    with run_lock(ledger, policy.connection, "pruned", f"policy {policy.name}", wait=wait,
                  on_note=on_note):
        return _prune(ledger, policy, open_files, audit)


def _prune(ledger: PointsLedger, policy: Policy, open_files: Iterable[str],
           audit: AuditLog | None) -> PruneResult:
    """:func:`prune` once it holds the run lock."""
    opened = set(open_files)
    result = PruneResult(plan_prune(ledger, policy))
    for row in result.plan.unfinished:
        try:
            result.done += finish_step(ledger, row, open_files=opened, audit=audit)
        except PruneError as exc:
            result.failed.append(str(exc))
    if result.plan.unfinished:  # their drives were not planned: plan again now they are done
        fresh = plan_prune(ledger, policy)
        result.plan = PrunePlan(policy.name, fresh.drives, result.plan.unfinished, fresh.errors)
    for step in result.plan.steps:
        try:
            step_id = record_step(ledger, policy.connection, step)
            row = next(s for s in ledger.prune_steps(policy.connection) if s.id == step_id)
            result.done += finish_step(ledger, row, open_files=opened, audit=audit)
        except PruneError as exc:
            result.failed.append(str(exc))
            break  # later steps were planned on this one's outcome
    return result
