"""Immutable state of the fleet: connections → block nodes → bitmaps, and jobs.

Everything here is plain frozen dataclasses so a snapshot can be handed to the UI, the headless
CLI or a test without copying, and compared cheaply (``is`` for unchanged parts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class BitmapState(StrEnum):
    """The one word shown for a bitmap (docs/qmp-facts.md, "Reply shapes")."""

    ACTIVE = "active"
    DISABLED = "disabled"
    FROZEN = "frozen"
    INCONSISTENT = "inconsistent"


class LinkState(StrEnum):
    """State of one QMP connection."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    FAILED = "failed"


class JobResult(StrEnum):
    """How a job ended, as far as the app knows."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # The connection dropped while the job ran: its outcome is unknown, its image is not trusted.
    LOST = "lost"


# JobStatus values in which a job is still doing (or about to do) work.
ACTIVE_JOB_STATUSES = frozenset(
    {"created", "running", "paused", "ready", "standby", "waiting", "pending", "aborting", "undefined"}
)


@dataclass(frozen=True, slots=True)
class Bitmap:
    """One dirty bitmap on one node (``BlockDirtyInfo``, normalised across QEMU versions)."""

    name: str | None
    granularity: int
    count: int
    recording: bool
    busy: bool
    inconsistent: bool = False
    # None when the QEMU is too old (< 4.0) to tell.
    persistent: bool | None = None

    @property
    def state(self) -> BitmapState:
        """Exactly one displayed state; inconsistent wins over busy, busy over recording."""
        if self.inconsistent:
            return BitmapState.INCONSISTENT
        if self.busy:
            return BitmapState.FROZEN
        return BitmapState.ACTIVE if self.recording else BitmapState.DISABLED

    @property
    def anonymous(self) -> bool:
        return self.name is None


@dataclass(frozen=True, slots=True)
class Node:
    """A named block node (usually a format node such as qcow2) and its bitmaps."""

    node_name: str
    driver: str
    file: str
    size: int
    read_only: bool = False
    device: str | None = None
    bitmaps: tuple[Bitmap, ...] = ()

    def bitmap(self, name: str) -> Bitmap | None:
        for bm in self.bitmaps:
            if bm.name == name:
                return bm
        return None

    @property
    def named_bitmaps(self) -> tuple[Bitmap, ...]:
        return tuple(bm for bm in self.bitmaps if bm.name is not None)


@dataclass(frozen=True, slots=True)
class Job:
    """A block job (backup, blockdev-create, ...), from query-jobs/query-block-jobs and events."""

    id: str
    type: str
    status: str
    current: int = 0
    total: int = 0
    speed: int = 0
    paused: bool = False
    error: str | None = None
    # Source node or device, when known (QEMU does not report it; the app records it when it starts
    # the job, and events of older QEMUs name the device).
    node: str | None = None
    result: JobResult | None = None
    # Number of BLOCK_JOB_ERROR events seen, and the last one's operation/action.
    io_errors: int = 0
    last_io_error: str | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None or self.status in ("concluded", "null")

    @property
    def progress(self) -> float:
        """Fraction done in [0, 1]."""
        if self.total <= 0:
            return 1.0 if self.result is JobResult.COMPLETED else 0.0
        return max(0.0, min(1.0, self.current / self.total))


@dataclass(frozen=True, slots=True)
class QemuVersion:
    major: int
    minor: int
    micro: int = 0
    package: str = ""

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.micro}"


@dataclass(frozen=True, slots=True)
class ConnectionModel:
    """Everything known about one QEMU."""

    name: str
    address: str
    state: LinkState = LinkState.CONNECTING
    error: str | None = None
    version: QemuVersion | None = None
    commands: frozenset[str] = frozenset()
    # Insertion order is QEMU's order; keyed by node name.
    nodes: dict[str, Node] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    # True once nodes have been read at least once since the last (re)connect.
    synced: bool = False
    # Seconds between node refreshes when polled less often than the configured interval (off
    # screen, or unchanged for a while); None: at the configured interval.
    slow_poll: float | None = None
    # The rights bitmap-tui's service gave this client ("operator", "viewer"); None: connected
    # to QEMU itself (or not yet connected).
    service_role: str | None = None

    @property
    def via_service(self) -> bool:
        return self.service_role is not None

    @property
    def active_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if not j.finished]

    def node(self, node_name: str) -> Node | None:
        return self.nodes.get(node_name)

    def find_node(self, name: str) -> Node | None:
        """A node by node name, or by the device it is attached to."""
        n = self.nodes.get(name)
        if n is not None:
            return n
        for n in self.nodes.values():
            if n.device == name:
                return n
        return None

    def bitmap_count(self) -> int:
        return sum(len(n.named_bitmaps) for n in self.nodes.values())


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One QMP event as shown in the event log."""

    time: float
    connection: str
    name: str
    data: dict[str, Any]
    # "error" for failures (BLOCK_JOB_ERROR, a completion with an error), "warning" for
    # cancellations, "info" otherwise.
    severity: str = "info"


@dataclass(frozen=True, slots=True)
class FleetState:
    """All connections, in the order they were given."""

    connections: dict[str, ConnectionModel] = field(default_factory=dict)

    def get(self, name: str) -> ConnectionModel | None:
        return self.connections.get(name)
