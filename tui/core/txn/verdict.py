"""What a transaction leaves behind: per job, per target image, per bitmap, and the next steps.

One set of rules (docs/qemu-bitmap-semantics.md) serves both the what-if shown before sending
(with assumed job results) and the verdict after the jobs ended (with the real ones):

- an image is VALID (a restore point) only when its job completed. A job with bitmap-mode
  ``always`` that failed or was cancelled leaves an INCOMPLETE image: not a restore point by
  itself, but the valid base of the next incremental with that bitmap, because QEMU synced the
  bitmap with what was copied. Any other failed, cancelled or lost job → INVALID (delete it);
- a backup's bitmap, per (sync, bitmap-mode, result, how far the job got):
  ``never`` → unchanged; completed (``on-success`` or ``always``) → cleared (it then holds only
  the writes made since the job started); ``on-success`` otherwise → restored as if nothing had
  been issued; ``always`` otherwise → cleared if the job had copied everything, else partly synced
  (sync ``bitmap``/``incremental``: what was not copied plus the new writes) or re-dirtied (sync
  ``full``/``top``: QEMU sets every bit not copied yet, more than it cleared);
- in grouped mode one failure cancels every other job of the group;
- bitmap actions (add, clear, ...) take effect when QEMU accepts the transaction, whatever the
  jobs do afterwards.

Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tui.core.base.format import human_bytes
from tui.core.model.state import ConnectionModel
from tui.core.txn.model import GROUPED, Transaction

COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
LOST = "lost"
# A job of a transaction whose reply was lost: QEMU may be running it.
NOT_KNOWN = "not known"

# Image verdicts.
VALID = "valid"
INVALID = "invalid"
INCOMPLETE = "incomplete"
# A target the app created could not be detached after its job: nothing says QEMU flushed and
# closed it, so it is neither a restore point nor a base (keep it; do not build on it).
UNKNOWN = "unknown"
IMAGE_VERDICTS = (VALID, INVALID, INCOMPLETE)

# Bitmap outcomes.
CLEARED = "cleared"
RESTORED = "restored"
UNCHANGED = "unchanged"
PARTLY_SYNCED = "partly synced"
RE_DIRTIED = "re-dirtied"
BITMAP_OUTCOMES = (CLEARED, RESTORED, UNCHANGED, PARTLY_SYNCED, RE_DIRTIED)

# What the operator does with an image of each verdict.
IMAGE_ACTION = {
    VALID: "keep",
    INVALID: "delete",
    INCOMPLETE: "keep as the base of the next incremental; not a restore point",
    UNKNOWN: "not trusted: its target was not detached, so it may not be flushed; do not build "
             "on it",
}


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


def bitmap_outcome(sync: str, bitmap_mode: str | None, result: str,
                   copied_all: bool = False) -> str:
    """What QEMU does to a backup's bitmap: one of :data:`BITMAP_OUTCOMES`.

    ``copied_all``: the job had copied everything before it ended (e.g. cancelled while pending);
    unknown (the what-if, a lost job) counts as not.
    """
    mode = bitmap_mode or "on-success"
    if mode == "never":
        return UNCHANGED
    if result == COMPLETED:
        return CLEARED
    if mode != "always":
        return RESTORED
    if copied_all:
        return CLEARED
    return RE_DIRTIED if sync in ("full", "top") else PARTLY_SYNCED


def image_verdict(result: str, bitmap: str | None, bitmap_mode: str | None) -> str:
    """VALID, INVALID or INCOMPLETE for a backup's target image, given how its job ended.

    INCOMPLETE: bitmap-mode ``always`` and the job failed or was cancelled. QEMU synced the bitmap
    with what the job copied, so the image is the base the next incremental with that bitmap
    needs, though it is no restore point by itself. A lost job (its end never seen) is INVALID:
    nothing is known of it.
    """
    if result == COMPLETED:
        return VALID
    if bitmap and bitmap_mode == "always" and result in (FAILED, CANCELLED):
        return INCOMPLETE
    return INVALID


def counts_agree(outcome: str, before: int, after: int, *, written_during: int = 0,
                 left_to_copy: int = 0, same_hash: bool = False) -> bool | None:
    """Whether a bitmap's measured dirty counts (bytes) agree with its outcome.

    ``written_during``: the most the guest was seen to dirty while the job ran (QEMU records it in
    an anonymous bitmap next to the frozen one); ``left_to_copy``: what the job had not copied
    when it ended. True: they agree; False: they contradict the outcome; None: they cannot tell
    (the guest wrote after the last look, so the count is higher than any outcome predicts).
    A cleared bitmap is judged against the writes made during the job, never against zero.
    """
    if outcome in (RESTORED, UNCHANGED):
        if same_hash:
            return True
        if after < before:
            return False  # bits went away: something cleared them
        return True if after <= before + written_during else None
    if outcome == CLEARED:
        if after < written_during:
            return False
        # exactly the writes seen during the job, or fewer bits than before (not restored)
        return True if after == written_during or after < before else None
    low = max(left_to_copy, written_during)  # partly synced / re-dirtied
    if after < low:
        return False
    return True if after <= left_to_copy + written_during else None


def usable_as_base(verdict: str) -> bool:
    """Whether the next incremental of the same bitmap may be based on an image of this verdict."""
    return verdict in (VALID, INCOMPLETE)


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
    bitmap_outcome: str | None = None  # one of BITMAP_OUTCOMES (None: no bitmap)
    verdict: str = ""  # the image's: valid | invalid | incomplete
    bitmap_mode: str | None = None

    @property
    def image_valid(self) -> bool:
        """A restore point (VALID)."""
        return self.result == COMPLETED

    @property
    def label(self) -> str:
        return self.device or self.node or self.job_id


@dataclass(frozen=True, slots=True)
class ImageVerdict:
    path: str
    verdict: str  # valid | invalid | incomplete
    job_id: str = ""
    device: str | None = None


@dataclass(frozen=True, slots=True)
class BitmapVerdict:
    node: str
    name: str
    outcome: str  # one of BITMAP_OUTCOMES
    # Partly synced or re-dirtied: only what the job copied was cleared.
    partial: bool = False
    cause: str = ""  # the job id or "action N" that decided it
    count_before: int | None = None
    count_after: int | None = None
    # Whether real counts / hashes agree with the outcome (None: not measured or not measurable).
    verified: bool | None = None
    # Measured: bytes the guest dirtied while the job ran (the count of QEMU's anonymous bitmap
    # that records them), and bytes the job had left to copy when it ended.
    written_during: int | None = None
    left_to_copy: int | None = None


OUTCOME_MEANING = {
    CLEARED: "holds only the writes since the job started",
    RESTORED: "as before the transaction, plus the writes since",
    UNCHANGED: "bitmap-mode never: as before, plus the writes since",
    PARTLY_SYNCED: "holds what the job did not copy plus the writes since it started",
    RE_DIRTIED: "QEMU set every bit the job did not copy, more than it cleared",
}


#: The exit code of a transaction whose outcome is unknown (its reply was lost).
EXIT_OUTCOME_UNKNOWN = 3


def unknown_advice(job_ids: tuple[str, ...]) -> str:
    """What to check when a transaction's reply was lost: its jobs, by id."""
    ids = ", ".join(job_ids)
    if not ids:
        return "check the bitmaps (query-named-block-nodes): the transaction started no job"
    return f"check its jobs by id ({ids}) with query-jobs, and the target images, before retrying"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of one transaction (or of one assumed failure, for the what-if)."""

    completion_mode: str
    #: True QEMU accepted it, False refused (no job started), None the outcome is unknown
    #: (the link dropped around the command: QEMU may be running the jobs).
    accepted: bool | None
    error: str | None = None
    jobs: tuple[JobVerdict, ...] = ()
    images: tuple[ImageVerdict, ...] = ()
    bitmaps: tuple[BitmapVerdict, ...] = ()
    next: tuple[str, ...] = ()
    # Pre-flight findings when refused before sending (strings).
    checks: tuple[str, ...] = field(default=())

    @property
    def all_succeeded(self) -> bool:
        return bool(self.accepted) and all(j.result == COMPLETED for j in self.jobs)

    @property
    def exit_code(self) -> int:
        """0 every job completed, 1 a job failed or was cancelled, 2 refused before any job,
        3 the outcome is unknown (the reply was lost: the jobs may be running)."""
        if self.accepted is None:
            return EXIT_OUTCOME_UNKNOWN
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


def decide(
    txn: Transaction,
    model: ConnectionModel | None,
    results: dict[str, tuple[str, str | None]],
    *,
    accepted: bool = True,
    copied_all: dict[str, bool] | None = None,
) -> Verdict:
    """The verdict for a prepared transaction given each job's ``(result, error)`` by job id;
    ``copied_all`` says which jobs had copied everything when they ended (unknown: not)."""
    backups = backups_of(txn, model)
    jobs = [_job_verdict(b, results, copied_all or {}) for b in backups]
    images = [ImageVerdict(j.image, j.verdict, j.job_id, j.device) for j in jobs]
    bitmaps = [BitmapVerdict(j.node, j.bitmap, j.bitmap_outcome,
                             j.bitmap_outcome in (PARTLY_SYNCED, RE_DIRTIED), j.job_id)
               for j in jobs if j.bitmap and j.node and j.bitmap_outcome]
    for i, a in enumerate(txn.actions):
        if a.type == "block-dirty-bitmap-clear":
            bitmaps.append(BitmapVerdict(str(a.data.get("node")), str(a.data.get("name")), CLEARED,
                                         cause=f"action {i + 1}"))
    nxt = next_steps(txn, backups, {j.job_id: j for j in jobs}, txn.completion_mode == GROUPED)
    return Verdict(txn.completion_mode, accepted, None, tuple(jobs), tuple(images),
                   tuple(bitmaps), tuple(nxt))


def _job_verdict(b: BackupInfo, results: dict[str, tuple[str, str | None]],
                 copied_all: dict[str, bool]) -> JobVerdict:
    result, error = results.get(b.job_id, (LOST, "no end of this job was seen"))
    outcome = None
    if b.bitmap and b.node:
        outcome = bitmap_outcome(b.sync, b.bitmap_mode, result, copied_all.get(b.job_id, False))
    return JobVerdict(b.job_id, b.device, b.node, b.target, result, error, b.image, b.sync,
                      b.bitmap, outcome, image_verdict(result, b.bitmap, b.bitmap_mode),
                      b.bitmap_mode)


def _names(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def next_steps(
    txn: Transaction, backups: list[BackupInfo], jobs: dict[str, JobVerdict], grouped: bool
) -> list[str]:
    """The operator's next steps, in words: one part for the transaction, then one per drive
    (the drives' bitmaps may have done different things), then orphaned bitmaps."""
    if not backups:
        return ["the transaction started no job: its bitmap actions took effect when QEMU accepted it"]
    ordered = [jobs[b.job_id] for b in backups]
    out = _transaction_steps(ordered, grouped)
    started = _bitmaps_started(txn)
    for j in ordered:
        out += _drive_steps(j, started.get(j.node or "", []), grouped)
    out += _orphaned_bitmap_steps(txn, ordered)
    return out


def _cause(jobs: list[JobVerdict]) -> str:
    failed = [j for j in jobs if j.result in (FAILED, LOST)]
    return "; ".join(f"{j.label}: {j.error or j.result}" for j in failed) or "a job was cancelled"


def _transaction_steps(jobs: list[JobVerdict], grouped: bool) -> list[str]:
    """What is true of the transaction as a whole."""
    bad = [j for j in jobs if j.result != COMPLETED]
    if not bad:
        return ["every job completed: every image is valid, keep them all"]
    if not grouped:
        if len(jobs) > 1:
            return ["a VM-wide point in time needs new backups of "
                    f"{_names([j.label for j in jobs])}"]
        return []
    invalid = [j.image for j in bad if j.verdict == INVALID]
    incomplete = [j for j in bad if j.verdict == INCOMPLETE]
    if not incomplete:
        out = [f"grouped mode: no image of this transaction is usable, delete {_names(invalid)}"]
        outcomes = {j.bitmap_outcome for j in jobs if j.bitmap}
        if outcomes <= {RESTORED, UNCHANGED}:
            what = ("every incremental bitmap was restored as if nothing had been issued: "
                    if outcomes == {RESTORED} else
                    "every bitmap is as before the transaction: " if outcomes else "")
            out.append(f"{what}fix the cause ({_cause(jobs)}) and re-run the same transaction")
        return out
    delete = f"; delete {_names(invalid)}" if invalid else ""
    out = [f"grouped mode: no image of this transaction is a restore point{delete}"]
    synced = [f"{j.label}'s {j.bitmap}" for j in incomplete]
    out.append(f"do not re-run the same transaction: bitmap-mode always synced {_names(synced)} "
               f"with what was copied; fix the cause ({_cause(jobs)}) and back up each drive "
               "as said for it below")
    return out


def _bitmaps_started(txn: Transaction) -> dict[str, list[str]]:
    """Bitmaps added or cleared by this transaction, per node: they count from it."""
    started: dict[str, list[str]] = {}
    for a in txn.actions:
        if a.type in ("block-dirty-bitmap-clear", "block-dirty-bitmap-add"):
            started.setdefault(str(a.data.get("node")), []).append(str(a.data.get("name")))
    return started


def _drive_steps(j: JobVerdict, started: list[str], grouped: bool) -> list[str]:
    """What to do about one drive's image and bitmap."""
    if j.verdict == VALID:
        return _valid_steps(j, started)
    if j.verdict == INCOMPLETE:
        why = f": {j.error}" if j.error else ""
        return [f"{j.image} is INCOMPLETE ({j.result}{why}): not a restore point by itself, but "
                f"keep it: bitmap-mode always left bitmap {j.bitmap} {j.bitmap_outcome} with what "
                f"was copied, so {j.label}'s next incremental with {j.bitmap} must be based on "
                f"{j.image}; on top of it, that incremental is a restore point"]
    out = []
    if not grouped:
        why = f": {j.error}" if j.error else ""
        out.append(f"{j.image} is INVALID ({j.result}{why}): delete it")
    if j.result == LOST and j.bitmap and j.bitmap_mode != "never":
        out.append(f"{j.label}: the end of job {j.job_id} was not seen, so what QEMU did to bitmap "
                   f"{j.bitmap} is not known: check it, or start a new chain with a full backup")
    elif j.bitmap_outcome == RESTORED:
        out.append(f"{j.label}'s next incremental must be based on its last valid image (the "
                   f"one before {j.image}): {j.bitmap} still holds every change since then")
    return out


def _valid_steps(j: JobVerdict, started: list[str]) -> list[str]:
    if j.sync == "full" and started:
        return [f"{j.image} is a full backup of {j.label} and bitmap {_names(started)} starts "
                f"from it: {j.label}'s next incremental must be based on {j.image}"]
    if j.bitmap and j.bitmap_mode in ("on-success", "always"):
        return [f"{j.label}'s next incremental must be based on {j.image}"]
    if j.bitmap:
        return [f"{j.label}: bitmap {j.bitmap} is unchanged (bitmap-mode never): the next backup "
                "with it again copies every change since the image it counted from"]
    if j.sync == "full":
        return [f"{j.image} is a full backup of {j.label}: it can anchor a new chain"]
    return []


def _orphaned_bitmap_steps(txn: Transaction, jobs: list[JobVerdict]) -> list[str]:
    """A bitmap cleared or added by this transaction next to a full backup that did not complete
    (the anchor of a new chain): the bitmap now counts from an image that does not exist."""
    out = []
    for i, a in enumerate(txn.actions):
        if a.type not in ("block-dirty-bitmap-clear", "block-dirty-bitmap-add"):
            continue
        node = a.data.get("node")
        for j in jobs:
            if j.node == node and j.sync == "full" and j.result != COMPLETED:
                verb = "cleared" if a.type.endswith("clear") else "added"
                out.append(f"bitmap {a.data.get('name')} on {node} was {verb} by action {i + 1} but "
                           f"the full backup {j.image} did not complete: the bitmap counts from an "
                           "image that does not exist; start the chain again (clear it together "
                           "with a new full backup)")
    return out


@dataclass(frozen=True, slots=True)
class Scenario:
    """One line of the what-if: an assumption and the verdict it leads to."""

    title: str
    verdict: Verdict


def what_if(txn: Transaction, model: ConnectionModel | None) -> list[Scenario]:
    """For the transaction's completion mode: all succeed, then each job failing in turn (part-way:
    how far a job would get is not known before sending)."""
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


def unreleased(v: Verdict, failures: dict[str, str]) -> Verdict:
    """``v`` with the images whose targets could not be detached (path → why) made UNKNOWN: an
    image is VALID only once its target was flushed and released."""
    if not failures:
        return v
    images = tuple(replace(i, verdict=UNKNOWN) if i.path in failures and i.verdict != INVALID
                   else i for i in v.images)
    notes = tuple(f"{path}: UNKNOWN, its target could not be detached ({why}); take a full "
                  "backup of its drive" for path, why in failures.items())
    return replace(v, images=images, next=v.next + notes)


def image_line(img: ImageVerdict) -> str:
    """``image PATH: VERDICT (what to do)``."""
    return f"image {img.path}: {img.verdict.upper()} ({IMAGE_ACTION[img.verdict]})"


def bitmap_line(b: BitmapVerdict) -> str:
    """``bitmap NODE/NAME: outcome (meaning)``, with the measured counts when there are some."""
    line = f"bitmap {b.node}/{b.name}: {b.outcome}"
    if b.count_before is not None and b.count_after is not None:
        line += f", dirty {human_bytes(b.count_before)} → {human_bytes(b.count_after)}"
        if b.written_during:
            line += f", {human_bytes(b.written_during)} written during the job"
    return f"{line} ({OUTCOME_MEANING[b.outcome]})"


def describe(v: Verdict) -> list[str]:
    """Human-readable lines (used by the CLI and the composer)."""
    lines = []
    if v.accepted is None:
        lines.append(f"OUTCOME UNKNOWN: {v.error}")
        lines += [f"  {c}" for c in v.checks]
        lines.append(unknown_advice(tuple(j.job_id for j in v.jobs)))
        return lines
    if not v.accepted:
        lines.append(f"REFUSED: {v.error}")
        lines += [f"  {c}" for c in v.checks]
        return lines
    for j in v.jobs:
        err = f": {j.error}" if j.error else ""
        lines.append(f"job {j.job_id} ({j.device or j.node}) {j.result.upper()}{err}")
    lines += [image_line(i) for i in v.images]
    lines += [bitmap_line(b) for b in v.bitmaps]
    lines += [f"next: {n}" for n in v.next]
    return lines
