"""What the ledger records: the states of transactions, jobs, images, prune steps and restores,
and one frozen row type per table (no database code here)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tui.core.model.state import JobResult


class ImageState(StrEnum):
    PENDING = "pending"
    VALID = "valid"
    INVALID = "invalid"
    # The outcome could not be resolved (QEMU restarted, job vanished): never trusted.
    UNKNOWN = "unknown"
    # A bitmap-mode "always" job that failed part-way: not a restore point by itself, but the
    # bitmap kept exactly what it did not copy, so it is a base for the next incremental.
    INCOMPLETE = "incomplete"


class JobState(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"
    # The transaction was refused before the job started.
    NOT_STARTED = "not-started"

    @classmethod
    def of(cls, result: JobResult) -> JobState:
        """The ledger's word for a job result QEMU reported (LOST: not known, so UNKNOWN)."""
        return cls.UNKNOWN if result is JobResult.LOST else cls(result.value)


class TxnState(StrEnum):
    PLANNED = "planned"  # targets being created, nothing sent yet
    SENDING = "sending"  # the transaction command is (maybe) on the wire
    SENT = "sent"  # QEMU accepted it; jobs run
    REFUSED = "refused"  # QEMU (or target creation) refused it; nothing changed in QEMU
    DONE = "done"  # every job's outcome is recorded


class PruneState(StrEnum):
    PLANNED = "planned"  # written; nothing done yet (or done partly: the step is repeatable)
    COMMITTED = "committed"  # merge: qemu-img commit finished, the base holds the newer point
    REBASED = "rebased"  # merge: the next image names the base as its backing file
    DONE = "done"  # every file of the step deleted


class RestoreState(StrEnum):
    WRITING = "writing"
    DONE = "done"
    FAILED = "failed"


# The states that are never a restore point but must be kept: they are still the base of a chain.
KEPT_NOT_TRUSTED = (ImageState.INCOMPLETE,)
# The states an incremental can build on (see tui.core.chains.plan).
BASE_STATES = (ImageState.VALID, ImageState.INCOMPLETE)


@dataclass(frozen=True, slots=True)
class TxnRow:
    id: int
    connection: str
    policy: str | None
    mode: str
    state: TxnState
    actions: list[dict[str, Any]]
    error: str | None
    created: float
    ended: float | None


@dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    txn_id: int
    connection: str
    job_id: str
    node: str | None
    state: JobState
    error: str | None


@dataclass(frozen=True, slots=True)
class ImageRow:
    id: int
    txn_id: int
    connection: str
    policy: str | None
    drive: str
    node: str
    bitmap: str
    path: str
    kind: str
    parent_id: int | None
    chain_id: int | None
    state: ImageState
    job_id: str | None
    source_file: str | None
    source_size: int | None
    size: int | None
    resets_bitmap: bool
    target_node: str | None
    file_node: str | None
    error: str | None
    created: float
    ended: float | None
    deleted: float | None = None  # when its file was deleted (only INVALID/UNKNOWN images)
    bitmap_mode: str = "on-success"
    released: float | None = None
    file_dev: int | None = None
    file_ino: int | None = None
    file_size: int | None = None
    file_mtime_ns: int | None = None
    canary_count: int | None = None  # a full's size canary when its chain started

    @property
    def trusted(self) -> bool:
        """A restore point: only a VALID image (with its chain) is the disk at its point."""
        return self.state is ImageState.VALID


@dataclass(frozen=True, slots=True)
class BreakRow:
    """A recorded break of one of our bitmaps (the chain using it needs a new full)."""

    id: int
    connection: str
    node: str
    bitmap: str
    reason: str
    created: float


@dataclass(frozen=True, slots=True)
class Observation:
    """The last sight of one of our bitmaps."""

    connection: str
    node: str
    bitmap: str
    present: bool
    count: int | None
    granularity: int | None
    persistent: bool | None
    seen: float


@dataclass(frozen=True, slots=True)
class PruneStepRow:
    id: int
    connection: str
    drive: str
    action: str  # "delete-chain" or "merge"
    plan: dict[str, Any]
    state: PruneState
    owner: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class RestoreRow:
    id: int
    connection: str
    drive: str
    image_id: int
    target: str
    partial: str
    format: str
    route: str
    state: RestoreState
    owner: str | None
    error: str | None


@dataclass(frozen=True)
class RunLockRow:
    """Who holds a connection's run lock: e.g. "backed up" by "policy nightly", on ``host`` as
    ``pid``, since ``started``, last heard of at ``heartbeat``."""

    connection: str
    activity: str
    holder: str
    host: str
    pid: int
    started: float
    heartbeat: float


@dataclass(frozen=True)
class ScheduledRunRow:
    """One scheduled run of ``policy`` for the time ``slot``: ``result`` is None while it runs,
    then "ok", "failed: ..." or "skipped: ..."."""

    id: int
    policy: str
    slot: float
    started: float
    ended: float | None
    result: str | None
