"""What a transaction leaves behind: per job, per target image, per bitmap, and the next steps.

One set of rules (DESIGN §1, qmp.md §3.4) serves both the what-if shown before sending (with
assumed job results) and the verdict after the jobs ended (with the real ones):

- an image is VALID only when its job completed; failed, cancelled or lost → INVALID;
- a backup's bitmap with bitmap-mode ``on-success`` (what ``sync: incremental`` means) is cleared
  only when its job completed (in grouped mode that implies the whole group did), otherwise it is
  restored as if nothing had been issued; ``never`` leaves it unchanged; ``always`` clears the bits
  of the data actually copied, even on failure or cancel (a *partial* clear);
- in grouped mode one failure cancels every other job of the group;
- bitmap actions (add, clear, ...) take effect when QEMU accepts the transaction, whatever the
  jobs do afterwards.

Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tui.model.state import ConnectionModel
from tui.txn.model import GROUPED, Action, Transaction

COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
LOST = "lost"

VALID = "valid"
INVALID = "invalid"

CLEARED = "cleared"
RESTORED = "restored"
UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """A backup action of the transaction as sent, with what the model told about it."""

    index: int
    job_id: str
    device: str | None  # the drive (device name) when the source has one
    node: str | None  # the source node name
    target: str  # as given: a path (drive-backup) or a node name (blockdev-backup)
    image: str  # the target image's path
    sync: str
    bitmap: str | None
    bitmap_mode: str | None  # effective: incremental means on-success

    @property
    def label(self) -> str:
        return self.device or self.node or self.job_id


def backups_of(txn: Transaction, model: ConnectionModel | None) -> list[BackupInfo]:
    """The backup actions of a (prepared) transaction, resolved against the model."""
    out = []
    for i, a in txn.backups:
        d = a.data
        dev = str(d.get("device", ""))
        node = model.find_node(dev) if model is not None else None
        target = str(d.get("target", ""))
        image = target
        if a.type == "blockdev-backup" and model is not None:
            tnode = model.find_node(target)
            if tnode is not None and tnode.file:
                image = tnode.file
        sync = str(d.get("sync", ""))
        bitmap = d.get("bitmap") if isinstance(d.get("bitmap"), str) else None
        mode = d.get("bitmap-mode")
        if bitmap and mode is None and sync == "incremental":
            mode = "on-success"
        out.append(BackupInfo(
            index=i,
            job_id=a.job_id or dev,
            device=node.device if node is not None else (dev if model is None else None),
            node=node.node_name if node is not None else None,
            target=target,
            image=image,
            sync=sync,
            bitmap=bitmap,
            bitmap_mode=mode if isinstance(mode, str) else None,
        ))
    return out


@dataclass(frozen=True, slots=True)
class JobVerdict:
    """How one backup job of the transaction ended, with what a backup ledger needs to link it
    into a chain (its image, sync mode, bitmap and what happened to the bitmap)."""

    job_id: str
    device: str | None
    node: str | None
    target: str
    result: str  # completed | failed | cancelled | lost
    error: str | None = None
    image: str = ""  # the target image's path
    sync: str = ""
    bitmap: str | None = None
    bitmap_outcome: str | None = None  # cleared | restored | unchanged (None: no bitmap)

    @property
    def image_valid(self) -> bool:
        return self.result == COMPLETED


@dataclass(frozen=True, slots=True)
class ImageVerdict:
    path: str
    verdict: str  # valid | invalid
    job_id: str = ""
    device: str | None = None


@dataclass(frozen=True, slots=True)
class BitmapVerdict:
    node: str
    name: str
    outcome: str  # cleared | restored | unchanged
    # For bitmap-mode always after a failure: only the copied part was cleared.
    partial: bool = False
    cause: str = ""  # the job id or "action N" that decided it
    count_before: int | None = None
    count_after: int | None = None
    # Whether real counts / hashes agree with the outcome (None: not measured).
    verified: bool | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of one transaction (or of one assumed failure, for the what-if)."""

    completion_mode: str
    accepted: bool
    error: str | None = None
    jobs: tuple[JobVerdict, ...] = ()
    images: tuple[ImageVerdict, ...] = ()
    bitmaps: tuple[BitmapVerdict, ...] = ()
    next: tuple[str, ...] = ()
    # Pre-flight findings when refused before sending (strings).
    checks: tuple[str, ...] = field(default=())

    @property
    def all_succeeded(self) -> bool:
        return self.accepted and all(j.result == COMPLETED for j in self.jobs)

    @property
    def exit_code(self) -> int:
        """0 every job completed, 1 a job failed or was cancelled, 2 refused before any job."""
        if not self.accepted:
            return 2
        return 0 if self.all_succeeded else 1

    def to_dict(self) -> dict[str, Any]:
        """The ``apply --json`` shape (other tools parse it: keep these keys)."""
        return {
            "completion_mode": self.completion_mode,
            "accepted": self.accepted,
            "error": self.error,
            "jobs": [
                {"job_id": j.job_id, "device": j.device, "node": j.node, "target": j.target,
                 # "lost" is not a QEMU outcome: the job's end was never seen, so it counts as
                 # failed for scripts (its error says why).
                 "result": FAILED if j.result == LOST else j.result, "error": j.error}
                for j in self.jobs
            ],
            "images": [{"path": i.path, "verdict": i.verdict} for i in self.images],
            "bitmaps": [
                {k: v for k, v in asdict(b).items()} for b in self.bitmaps
            ],
            "next": list(self.next),
            "checks": list(self.checks),
        }


def bitmap_outcome(info: BackupInfo, result: str) -> tuple[str, bool]:
    """(outcome, partial) of a backup's bitmap given how its job ended."""
    mode = info.bitmap_mode or "on-success"
    if mode == "never":
        return UNCHANGED, False
    if result == COMPLETED:
        return CLEARED, False
    if mode == "always":
        return CLEARED, True
    return RESTORED, False


def decide(
    txn: Transaction,
    model: ConnectionModel | None,
    results: dict[str, tuple[str, str | None]],
    *,
    accepted: bool = True,
) -> Verdict:
    """The verdict for a prepared transaction given each job's ``(result, error)`` by job id."""
    backups = backups_of(txn, model)
    grouped = txn.completion_mode == GROUPED
    jobs, images, bitmaps = [], [], []
    for b in backups:
        result, error = results.get(b.job_id, (LOST, "no end of this job was seen"))
        outcome: str | None = None
        if b.bitmap and b.node:
            outcome, partial = bitmap_outcome(b, result)
            bitmaps.append(BitmapVerdict(b.node, b.bitmap, outcome, partial, b.job_id))
        jobs.append(JobVerdict(b.job_id, b.device, b.node, b.target, result, error, b.image,
                               b.sync, b.bitmap, outcome))
        images.append(ImageVerdict(b.image, VALID if result == COMPLETED else INVALID, b.job_id,
                                   b.device))
    for i, a in enumerate(txn.actions):
        if a.type == "block-dirty-bitmap-clear":
            bitmaps.append(BitmapVerdict(str(a.data.get("node")), str(a.data.get("name")), CLEARED,
                                         cause=f"action {i + 1}"))
    nxt = next_steps(txn, backups, {j.job_id: j for j in jobs}, grouped)
    return Verdict(txn.completion_mode, accepted, None, tuple(jobs), tuple(images),
                   tuple(bitmaps), tuple(nxt))


def _names(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def next_steps(
    txn: Transaction, backups: list[BackupInfo], jobs: dict[str, JobVerdict], grouped: bool
) -> list[str]:
    """The operator's next steps, in words, following the documentation's rules."""
    ok = [b for b in backups if jobs[b.job_id].result == COMPLETED]
    bad = [b for b in backups if jobs[b.job_id].result != COMPLETED]
    out: list[str] = []
    if not backups:
        return ["the transaction started no job: its bitmap actions took effect when QEMU accepted it"]
    if not bad:
        out.append("every job completed: every image is valid, keep them all")
    elif grouped:
        failed = [b for b in bad if jobs[b.job_id].result in (FAILED, LOST)]
        cause = "; ".join(f"{b.label}: {jobs[b.job_id].error or jobs[b.job_id].result}" for b in failed)
        out.append(f"grouped mode: no image of this transaction is usable, delete "
                   f"{_names([b.image for b in bad])}")
        if any(b.bitmap for b in backups):
            restored = [b for b in backups if b.bitmap and b.bitmap_mode == "on-success"]
            if restored:
                out.append("every incremental bitmap was restored as if nothing had been issued: "
                           f"fix the cause ({cause or 'a job was cancelled'}) and re-run the same "
                           "transaction")
        else:
            out.append(f"fix the cause ({cause or 'a job was cancelled'}) and re-run the same "
                       "transaction")
    else:
        for b in ok:
            out.append(f"{b.image} is VALID: keep it")
        for b in bad:
            j = jobs[b.job_id]
            why = f": {j.error}" if j.error else ""
            out.append(f"{b.image} is INVALID ({j.result}{why}): delete it")
        if len(backups) > 1:
            out.append("a VM-wide point in time needs new backups of "
                       f"{_names([b.label for b in backups])}")
    # bitmaps started (added or cleared) by this transaction, per node: they count from it
    started: dict[str, list[str]] = {}
    for a in txn.actions:
        if a.type in ("block-dirty-bitmap-clear", "block-dirty-bitmap-add"):
            started.setdefault(str(a.data.get("node")), []).append(str(a.data.get("name")))
    for b in backups:
        j = jobs[b.job_id]
        if j.result == COMPLETED and b.sync == "full" and b.node in started:
            out.append(f"{b.image} is a full backup of {b.label} and bitmap "
                       f"{_names(started[b.node or ''])} starts from it: {b.label}'s next "
                       f"incremental must be based on {b.image}")
        elif j.result == COMPLETED and b.bitmap and b.bitmap_mode in ("on-success", "always"):
            out.append(f"{b.label}'s next incremental must be based on {b.image}")
        elif j.result == COMPLETED and b.sync == "full":
            out.append(f"{b.image} is a full backup of {b.label}: it can anchor a new chain")
        elif j.result != COMPLETED and b.bitmap and b.bitmap_mode == "on-success" and not grouped:
            out.append(f"{b.label}'s next incremental must be based on its last valid image (the "
                       f"one before {b.image}): {b.bitmap} still holds every change since then")
        elif j.result != COMPLETED and b.bitmap and b.bitmap_mode == "always":
            out.append(f"{b.label}: bitmap {b.bitmap} was partly cleared (bitmap-mode always) and "
                       f"{b.image} is incomplete: take a new full backup of {b.label}")
    # A bitmap cleared or added by this transaction next to a full backup that failed (the anchor
    # of a new chain): the bitmap now counts from an image that does not exist.
    for i, a in enumerate(txn.actions):
        if a.type not in ("block-dirty-bitmap-clear", "block-dirty-bitmap-add"):
            continue
        node = a.data.get("node")
        for b in bad:
            if b.node == node and b.sync == "full":
                verb = "cleared" if a.type.endswith("clear") else "added"
                out.append(f"bitmap {a.data.get('name')} on {node} was {verb} by action {i + 1} but "
                           f"the full backup {b.image} did not complete: the bitmap counts from an "
                           "image that does not exist; start the chain again (clear it together "
                           "with a new full backup)")
    return out


@dataclass(frozen=True, slots=True)
class Scenario:
    """One line of the what-if: an assumption and the verdict it leads to."""

    title: str
    verdict: Verdict


def what_if(txn: Transaction, model: ConnectionModel | None) -> list[Scenario]:
    """For the transaction's completion mode: all succeed, then each job failing in turn."""
    backups = backups_of(txn, model)
    out = [Scenario("every job completes",
                    decide(txn, model, {b.job_id: (COMPLETED, None) for b in backups}))]
    for b in backups:
        results: dict[str, tuple[str, str | None]] = {}
        for other in backups:
            if other is b:
                results[other.job_id] = (FAILED, "assumed failure")
            elif txn.completion_mode == GROUPED:
                results[other.job_id] = (CANCELLED, None)
            else:
                results[other.job_id] = (COMPLETED, None)
        out.append(Scenario(f"{b.label}'s job ({b.job_id}) fails", decide(txn, model, results)))
    return out


def describe(v: Verdict) -> list[str]:
    """Human-readable lines (used by the CLI and the composer)."""
    lines = []
    if not v.accepted:
        lines.append(f"REFUSED: {v.error}")
        lines += [f"  {c}" for c in v.checks]
        return lines
    for j in v.jobs:
        err = f": {j.error}" if j.error else ""
        lines.append(f"job {j.job_id} ({j.device or j.node}) {j.result.upper()}{err}")
    for i in v.images:
        lines.append(f"image {i.path}: {i.verdict.upper()} ({'keep' if i.verdict == VALID else 'delete'})")
    for b in v.bitmaps:
        part = " (partially)" if b.partial else ""
        counts = ""
        if b.count_before is not None and b.count_after is not None:
            counts = f", dirty {b.count_before} → {b.count_after} bytes"
        lines.append(f"bitmap {b.node}/{b.name}: {b.outcome}{part}{counts}")
    lines += [f"next: {n}" for n in v.next]
    return lines


def action_of(txn: Transaction, job_id: str) -> Action | None:
    for a in txn.actions:
        if a.job_id == job_id:
            return a
    return None
