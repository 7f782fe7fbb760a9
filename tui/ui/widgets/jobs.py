"""Block jobs: status word, a progress bar, measured rate, ETA and error.

Finished jobs stay (marked by their result) until the operator dismisses them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from tui.core.base.format import human_bytes, human_duration, human_rate
from tui.core.model.state import ConnectionModel, Job, JobResult
from tui.ui.actions import JOBS, bindings
from tui.ui.roles import RendersState
from tui.ui.widgets.difftable import DiffTable, Row
from tui.ui.widgets.styled import STATE_CLASSES, styled

SEP = "\x1f"
BAR_WIDTH = 8
# Below this width (80-column terminals) the table drops Rate and shortens the error to what
# fits (Node stays in view: Error is the last column everywhere); Enter on a job shows it all.
NARROW = 100
# The job id column: as wide as the longest id, within these bounds (an id longer than the most
# is cut in the middle, where ids made by numbering differ least: "demo-b…kup-2").
ID_MIN, ID_MAX_WIDE, ID_MAX_NARROW = 6, 32, 16
WIDE_COLUMNS = (
    ("id", "Job", ID_MIN), ("type", "Type", 7), ("status", "Status", 9),
    ("progress", "Progress", 13), ("rate", "Rate", 12), ("eta", "ETA", 5), ("node", "Node", 10),
    ("error", "Error", None),
)  # "1023.9 KiB/s" (12 characters) is the widest rate
NARROW_COLUMNS = (
    ("id", "Job", ID_MIN), ("type", "Type", 6), ("status", "Status", 9),
    ("progress", "Progress", 13), ("eta", "ETA", 5), ("node", "Node", 10), ("error", "Error", None),
)


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with "…" when something was cut."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def cut_middle(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters in the middle ("demo-b…kup-2")."""
    if len(text) <= width:
        return text
    if width < 3:
        return text[:width]
    head = width // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def id_width(ids: Iterable[str], narrow: bool) -> int:
    """The id column's width for these ids."""
    longest = max((len(i) for i in ids), default=ID_MIN)
    return max(ID_MIN, min(longest, ID_MAX_NARROW if narrow else ID_MAX_WIDE))


@dataclass(slots=True)
class _Sample:
    time: float
    current: int
    rate: float | None = None


def job_word(job: Job) -> tuple[str, str]:
    """(word, component class): the result wins over QEMU's status once a job has ended."""
    if job.result is JobResult.FAILED:
        return "failed", "job--failed"
    if job.result is JobResult.CANCELLED:
        return "cancelled", "job--cancelled"
    if job.result is JobResult.LOST:
        return "lost", "job--lost"
    if job.result is JobResult.COMPLETED:
        return "completed", "job--completed"
    if job.paused or job.status == "paused":
        return "paused", "job--paused"
    if job.status in ("pending", "waiting", "ready", "standby", "created"):
        return job.status, "job--waiting"
    if job.status in ("concluded", "null"):
        return job.status, "job--completed"
    return job.status, "job--running"


def job_key(conn: str, job_id: str) -> str:
    return f"{conn}{SEP}{job_id}"


def split_key(key: str) -> tuple[str, str]:
    conn, _, jid = key.partition(SEP)
    return conn, jid


class JobsTable(DiffTable):
    """Jobs of the shown connections; rate and ETA are measured from successive polls."""

    COMPONENT_CLASSES = STATE_CLASSES
    # The actions run on the dashboard screen (``screen.<action>``): the registry builds the
    # bindings; ids let the config remap the keys; read-only hides them via the screen.
    BINDINGS = bindings(JOBS)

    def __init__(self, *args: Any, clock: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock
        self._samples: dict[str, _Sample] = {}
        self.text_filter = ""
        self.narrow = False
        self.error_width = 0  # narrow: characters of the error that fit; 0 = no limit
        self.id_width = ID_MIN  # from the ids shown (see :func:`id_width`)

    def on_mount(self) -> None:
        self.border_title = "Jobs"
        self._add_columns()

    def _add_columns(self) -> None:
        for key, label, width in NARROW_COLUMNS if self.narrow else WIDE_COLUMNS:
            self.add_column(label, key=key, width=self.id_width if key == "id" else width)

    def _rebuild_columns(self) -> None:
        self.reset()
        self.clear(columns=True)
        self._add_columns()

    def _error_width(self) -> int:
        fixed = sum(w + 2 * self.cell_padding for k, _, w in NARROW_COLUMNS if w and k != "id")
        fixed += self.id_width + 2 * self.cell_padding
        return max(self.size.width - fixed - 2 * self.cell_padding, 8)

    def on_resize(self) -> None:
        narrow = self.size.width < NARROW
        error_width = self._error_width() if narrow else 0
        if (narrow, error_width) == (self.narrow, self.error_width):
            return
        if narrow != self.narrow:
            self.narrow = narrow
            self._rebuild_columns()
        else:
            self.reset()  # rewrite the error cells at the new width
        self.error_width = error_width
        if isinstance(self.screen, RendersState):
            self.call_later(self.screen.render_state)

    def job_details(self, key: str, job: Job) -> str:
        """Everything about a job in a few lines (the narrow table shortens some of it)."""
        conn, _ = split_key(key)
        word, _ = job_word(job)
        lines = [f"{job.type} on {conn}, node {job.node or '-'}: {word}",
                 f"progress {human_bytes(job.current)} of {human_bytes(job.total)} "
                 f"({job.progress:.0%})",
                 f"speed limit {human_rate(job.speed) if job.speed else 'none'}"]
        if job.io_errors:
            lines.append(f"I/O errors reported: {job.io_errors} (last: {job.last_io_error})")
        err = job.error or job.last_io_error
        if err:
            lines.append(f"error: {err}")
        return "\n".join(lines)

    @property
    def selection(self) -> tuple[str, str] | None:
        key = self.selected_key
        return split_key(key) if key else None

    def _rate(self, key: str, job: Job) -> float | None:
        now = self.clock()
        sample = self._samples.get(key)
        if sample is None or job.current < sample.current:
            self._samples[key] = _Sample(now, job.current)
            return None
        if job.current == sample.current or now <= sample.time:
            return sample.rate
        instant = (job.current - sample.current) / (now - sample.time)
        # Smooth: polls arrive in uneven intervals and the rate would jitter.
        rate = instant if sample.rate is None else 0.5 * sample.rate + 0.5 * instant
        self._samples[key] = _Sample(now, job.current, rate)
        return rate

    def progress_cell(self, job: Job) -> Text:
        frac = job.progress
        filled = int(round(frac * BAR_WIDTH))
        bar = styled(self, "█" * filled, "progress--bar")
        bar.append_text(styled(self, "░" * (BAR_WIDTH - filled), "progress--empty"))
        bar.append(f" {frac * 100:3.0f}%")
        return bar

    def row_for(self, key: str, job: Job) -> tuple[Any, ...]:
        word, cls = job_word(job)
        running = not job.finished and not job.paused
        rate = self._rate(key, job) if running else None
        eta = (job.total - job.current) / rate if rate and job.total else None
        err = job.error or job.last_io_error
        if err and self.narrow and self.error_width:
            err = shorten(err, self.error_width)
        error = styled(self, err, "text--error") if err else Text("")
        eta_text = human_duration(eta) if eta is not None else "-"
        progress = self.progress_cell(job)
        jid = cut_middle(job.id, self.id_width)
        if self.narrow:
            return (jid, job.type, styled(self, word, cls), progress, eta_text,
                    job.node or "-", error)
        return (jid, job.type, styled(self, word, cls), progress,
                human_rate(rate) if rate else "-", eta_text, job.node or "-", error)

    def rows_for(self, conns: Iterable[ConnectionModel]) -> list[Row]:
        rows: list[Row] = []
        needle = self.text_filter.lower()
        for conn in conns:
            for job in conn.jobs.values():
                if needle and needle not in f"{job.id} {job.type} {job.status}".lower():
                    continue
                key = job_key(conn.name, job.id)
                rows.append((key, self.row_for(key, job)))
        live = {k for k, _ in rows}
        for gone in [k for k in self._samples if k not in live]:
            del self._samples[gone]
        return rows

    def show(self, conns: list[ConnectionModel]) -> int:
        width = id_width((j.id for c in conns for j in c.jobs.values()), self.narrow)
        if width != self.id_width:
            self.id_width = width
            self._rebuild_columns()
            if self.narrow:
                self.error_width = self._error_width()
        return self.sync_rows(self.rows_for(conns))
