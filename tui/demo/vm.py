"""``bitmap-tui demo``: the console on a throw-away local QEMU, with something to look at.

The sandbox QEMU has two qcow2 drives; drive1 sits on blkdebug so its next read can be made to
fail on demand (a partial failure to watch). Bitmaps are set up in every state (active,
disabled, frozen by a slow backup, inconsistent after a simulated crash), and a background guest
writer dirties random ranges so the dirty counts move. Everything is removed on exit, also on
ctrl+c, SIGTERM and SIGHUP (a closed terminal).

This module is the QEMU side and has no Textual import; ``bitmap-tui demo`` (:mod:`tui.cli.demo`)
opens the console on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field

from tui.demo.sandbox import Sandbox, SandboxError

log = logging.getLogger(__name__)

CONNECTION = "demo"
DISK_SIZE = 64 * 2**20
FAILING_DRIVE = 1
BACKUP_JOB = "demo-backup"
BACKUP_TARGET = "demo-target"
# Slow enough that the frozen bitmap and the job's progress stay on screen for a minute or two.
BACKUP_SPEED = 512 * 1024


@dataclass(frozen=True, slots=True)
class DemoBitmap:
    drive: int
    name: str
    state: str  # the state the demo sets it up in (it may change: the demo is live)
    why: str


# One bitmap per state, so the dashboard shows all of them at once.
BITMAPS = (
    DemoBitmap(0, "nightly", "active", "records every guest write"),
    DemoBitmap(0, "paused", "disabled", "added disabled: its count stays put"),
    DemoBitmap(0, "crashed", "inconsistent", "persistent, QEMU killed: only remove works"),
    DemoBitmap(1, "bitmap0", "active", "records every guest write on drive1"),
    DemoBitmap(1, "in-backup", "frozen", "used by the slow backup job: nothing may touch it"),
)


@dataclass
class Demo:
    """The sandbox QEMU with demo bitmaps, a slow backup and a guest writer."""

    write_interval: float = 0.5
    seed: int | None = None
    sandbox: Sandbox = field(init=False)
    _writer: asyncio.Task[None] | None = field(default=None, init=False)
    writes: int = field(default=0, init=False)
    armed: bool = field(default=False, init=False)
    backup_job: str = field(default=BACKUP_JOB, init=False)
    _backups: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        self.sandbox = Sandbox(drives=2, size=f"{DISK_SIZE // 2**20}M", failing=[FAILING_DRIVE])
        self._rng = random.Random(self.seed)

    @property
    def backup_node(self) -> str:
        """The source node of the demo's backup job (QEMU does not report a job's node)."""
        return f"disk{FAILING_DRIVE}"

    @property
    def address(self) -> str:
        """The QMP address the app connects to (the sandbox's second monitor is its own)."""
        return self.sandbox.address

    async def start(self) -> Demo:
        """Start QEMU and set up the bitmaps and the backup; on failure, remove what was made."""
        try:
            await self.sandbox.start()
            await self._make_inconsistent(0, "crashed")
            await self.sandbox.add_bitmap(0, "nightly")
            await self.sandbox.add_bitmap(0, "paused", disabled=True)
            await self.sandbox.add_bitmap(1, "bitmap0")
            await self.sandbox.add_bitmap(1, "in-backup")
            # Some history before the app opens, so the counts are not all zero.
            await self.sandbox.write(0, 0, "4M", 0x21)
            await self.sandbox.write(1, "8M", "24M", 0x22)
            await self.start_backup()
        except BaseException:
            await self.close()
            raise
        self._writer = asyncio.create_task(self._write_forever(), name="demo-writer")
        return self

    async def _make_inconsistent(self, drive: int, name: str) -> None:
        # A persistent bitmap is written to the qcow2 on a clean quit; the next QEMU marks it
        # in-use when it opens the image, so killing that QEMU leaves it inconsistent on disk.
        await self.sandbox.add_bitmap(drive, name, persistent=True)
        await self.sandbox.restart()
        await self.sandbox.restart(kill=True)

    async def start_backup(self) -> None:
        """A speed-limited incremental backup of drive1 to a null target: its bitmap is frozen
        while it runs, and a read error armed on drive1 makes it fail."""
        nodes = await self.sandbox.qmp("query-named-block-nodes", {"flat": True})
        if not any(n.get("node-name") == BACKUP_TARGET for n in nodes):
            await self.sandbox.qmp(
                "blockdev-add", {"driver": "null-co", "node-name": BACKUP_TARGET, "size": DISK_SIZE}
            )
        await self.sandbox.qmp(
            "blockdev-backup",
            {
                "job-id": self.backup_job,
                "device": f"disk{FAILING_DRIVE}",
                "target": BACKUP_TARGET,
                "sync": "incremental",
                "bitmap": "in-backup",
                "bitmap-mode": "on-success",
                "speed": BACKUP_SPEED,
                "auto-dismiss": False,
            },
        )

    async def restart_backup(self) -> None:
        """Dismiss the demo backup if it has ended, and start it again."""
        jobs = await self.sandbox.qmp("query-jobs")
        for job in jobs:
            if job.get("id") == self.backup_job:
                if job.get("status") != "concluded":
                    raise SandboxError(f"{self.backup_job} is still {job.get('status')}")
                await self.sandbox.qmp("job-dismiss", {"id": self.backup_job})
        # A fresh job id each run: an id is a job's identity in the app's history.
        self._backups += 1
        self.backup_job = f"{BACKUP_JOB}-{self._backups}"
        await self.start_backup()

    async def fail_next_read(self) -> None:
        """Arm blkdebug: drive1's next read fails once with EIO (e.g. the backup's next chunk)."""
        # A guest write under a running backup reads the old data first (copy-before-write) and
        # would take the error itself; keep the writer off drive1 until a job has read.
        self.armed = True
        await self.sandbox.arm_read_error(FAILING_DRIVE)

    async def _drive1_jobs_running(self) -> bool:
        jobs = await self.sandbox.qmp("query-block-jobs")
        return any(j.get("status") not in ("concluded", "null") for j in jobs)

    async def write_once(self) -> None:
        """One guest write of 64 KiB-1 MiB at a random aligned offset of a random drive."""
        drive = self._rng.randrange(2)
        if self.armed and drive == FAILING_DRIVE:
            if await self._drive1_jobs_running():
                drive = 0
            else:
                self.armed = False
        length = self._rng.choice((64, 128, 256, 1024)) * 1024
        offset = self._rng.randrange(0, DISK_SIZE - length, 64 * 1024)
        await self.sandbox.write(drive, offset, length, self._rng.randrange(1, 255))
        self.writes += 1

    async def _write_forever(self) -> None:
        while True:
            await asyncio.sleep(self.write_interval)
            try:
                await self.write_once()
            except SandboxError as exc:
                # e.g. the armed read error hit a write's metadata read: keep going.
                log.info("demo write failed: %s", exc)
            except Exception:
                return  # QEMU is gone (closing): the writer has nothing left to do

    async def close(self) -> None:
        """Stop the writer, quit QEMU and delete the scratch directory (idempotent)."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer
            self._writer = None
        await self.sandbox.close()
