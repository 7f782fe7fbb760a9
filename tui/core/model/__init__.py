"""The state model: plain data and a pure reducer, no I/O and no Textual."""

from tui.core.model.state import (
    ACTIVE_JOB_STATUSES,
    Bitmap,
    BitmapState,
    ConnectionModel,
    EventRecord,
    FleetState,
    Job,
    JobResult,
    LinkState,
    Node,
    QemuVersion,
)

__all__ = [
    "ACTIVE_JOB_STATUSES",
    "Bitmap",
    "BitmapState",
    "ConnectionModel",
    "EventRecord",
    "FleetState",
    "Job",
    "JobResult",
    "LinkState",
    "Node",
    "QemuVersion",
]
