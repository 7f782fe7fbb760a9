"""QEMU's iotest 257 replayed through the product: bitmap-mode × failure × sync mode.

Each case (one row of :data:`CASES`) follows 257's steps on a real QEMU: writes (group 0), a
reference copy, bitmap0 at 64 KiB, writes (group 1), a reference copy, then backup #1 with the
case's sync and bitmap-mode, sent through ``prepare`` → ``TransactionRun`` with auto-finalize off:

- ``None``: the guest writes group 2 while the job is pending, then the job is finalized;
- ``"simulated"``: the same, then the job is cancelled instead;
- ``"intermediate"``: the drive fails its second read (one cluster is copied first).

Then writes (group 3), a reference copy and backup #2 (sync bitmap, same mode) as recovery.
Each case asserts what the product says (job result, image verdict, bitmap outcome word,
verified counts) and the counts 257.out expects, then builds the chain the verdict calls usable
(backup #2 on backup #1 if #1 is VALID or INCOMPLETE, else on the first reference) and checks it
with ``qemu-img compare`` against the reference copy of that point.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kit.common import requires_qemu, wait_for
from tests.kit.iotest import (
    G,
    backup,
    backup_action,
    bitmap_count,
    close_target,
    create_image,
    identical,
    open_target,
    qemu_and_product,
    rebase,
    reference_copy,
    send,
    write_group,
)
from tui.core.txn import Transaction
from tui.core.txn.verdict import usable_as_base

pytestmark = [requires_qemu, pytest.mark.qemu]


@dataclass(frozen=True)
class Case:
    sync: str
    mode: str
    failure: str | None
    result: str  # of backup #1
    image: str  # its verdict
    outcome: str  # its bitmap's outcome word
    after1: int  # bitmap0's count after backup #1, in 64 KiB clusters (257.out)
    after3: int  # after the group 3 writes
    after2: int  # after backup #2

    @property
    def id(self) -> str:
        return f"{self.sync}-{self.mode}-{self.failure or 'none'}"


SIM, MID = "simulated", "intermediate"
CASES = [
    Case("bitmap", "never", SIM, "cancelled", "invalid", "unchanged", 10, 15, 15),
    Case("bitmap", "never", MID, "failed", "invalid", "unchanged", 6, 14, 14),
    Case("bitmap", "never", None, "completed", "valid", "unchanged", 10, 15, 15),
    Case("bitmap", "on-success", SIM, "cancelled", "invalid", "restored", 10, 15, 0),
    Case("bitmap", "on-success", MID, "failed", "invalid", "restored", 6, 14, 0),
    Case("bitmap", "on-success", None, "completed", "valid", "cleared", 7, 12, 0),
    Case("bitmap", "always", SIM, "cancelled", "incomplete", "cleared", 7, 12, 0),
    Case("bitmap", "always", MID, "failed", "incomplete", "partly synced", 5, 13, 0),
    Case("bitmap", "always", None, "completed", "valid", "cleared", 7, 12, 0),
    Case("full", "on-success", SIM, "cancelled", "invalid", "restored", 10, 15, 0),
    Case("full", "on-success", MID, "failed", "invalid", "restored", 6, 14, 0),
    Case("full", "on-success", None, "completed", "valid", "cleared", 7, 12, 0),
    Case("full", "always", SIM, "cancelled", "incomplete", "cleared", 7, 12, 0),
    Case("full", "always", MID, "failed", "incomplete", "re-dirtied", 1009, 1014, 0),
    Case("full", "always", None, "completed", "valid", "cleared", 7, 12, 0),
    Case("top", "on-success", SIM, "cancelled", "invalid", "restored", 10, 15, 0),
    Case("top", "on-success", MID, "failed", "invalid", "restored", 6, 14, 0),
    Case("top", "on-success", None, "completed", "valid", "cleared", 7, 12, 0),
    Case("top", "always", SIM, "cancelled", "incomplete", "cleared", 7, 12, 0),
    Case("top", "always", MID, "failed", "incomplete", "re-dirtied", 6, 14, 0),
    Case("top", "always", None, "completed", "valid", "cleared", 7, 12, 0),
]

# One job at a time copies in order, so "intermediate" copies exactly one cluster (as in 257).
ONE_WORKER = {"x-perf": {"max-workers": 1}}


async def writes_during_pending_job(sb, conn, run_, case: Case) -> None:
    """257's callback: group 2 written while backup #1 is pending; the named bitmap stays frozen
    at group 1 (6 clusters) and QEMU's anonymous bitmap records exactly group 2 (7)."""
    await wait_for(lambda: (j := conn.model.jobs.get("backup_1")) is not None
                   and j.status == "pending", 30, "backup_1 pending")
    await write_group(sb, 2)
    await conn.refresh_nodes()
    node = conn.model.nodes["disk0"]
    assert bitmap_count(conn) == 6 * G and node.bitmap("bitmap0").busy
    assert [b.count for b in node.bitmaps if b.anonymous and b.recording] == [7 * G]
    await wait_for(lambda: run_.written_during("disk0", "bitmap0") == 7 * G, 10,
                   "the tracker saw the writes made during the job")
    verb = "job-cancel" if case.failure == SIM else "job-finalize"
    await sb.qmp(verb, {"id": "backup_1"})


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_iotest_257(case: Case, tmp_path: Path) -> None:
    failing = frozenset({0}) if case.failure == MID else frozenset()
    async with qemu_and_product(tmp_path, drives=1, second_read_fails=failing) as (sb, conn):
        await write_group(sb, 0)
        ref0 = await reference_copy(sb, conn, "fbackup0")
        await sb.add_bitmap(0, "bitmap0", granularity=G)
        await write_group(sb, 1)
        await conn.refresh_nodes()
        assert bitmap_count(conn) == 6 * G
        ref1 = await reference_copy(sb, conn, "fbackup1")

        # backup #1
        if case.failure == MID:
            await sb.hmp('qemu-io drive0 "flush"')  # arms the failure of the second read
        bsync1 = create_image(sb.path("bsync1.qcow2"))
        await open_target(sb, conn, "backup_target_1", bsync1)
        run1 = await send(conn, Transaction((backup_action(
            "backup_1", "backup_target_1", case.sync, mode=case.mode,
            **{"auto-finalize": False}, **ONE_WORKER),)))
        waiting = asyncio.ensure_future(run1.wait(60))
        if case.failure != MID:
            await writes_during_pending_job(sb, conn, run1, case)
        v1 = await waiting
        await close_target(sb, "backup_target_1")

        job = v1.jobs[0]
        assert (job.result, job.verdict, job.bitmap_outcome) == (
            case.result, case.image, case.outcome), v1
        if case.failure == MID:
            assert job.error == "Input/output error"
        assert v1.images[0].verdict == case.image and v1.to_dict()["images"][0]["verdict"] == case.image
        b1 = v1.bitmaps[0]
        assert (b1.count_before, b1.count_after) == (6 * G, case.after1 * G), b1
        assert b1.verified is True, b1
        assert not any(n.startswith("check bitmap") for n in v1.next), v1.next

        # writes, reference, backup #2 (the recovery)
        await write_group(sb, 3)
        await conn.refresh_nodes()
        assert bitmap_count(conn) == case.after3 * G
        ref2 = await reference_copy(sb, conn, "fbackup2")
        bsync2 = create_image(sb.path("bsync2.qcow2"))
        await open_target(sb, conn, "backup_target_2", bsync2)
        v2 = await backup(conn, Transaction((backup_action(
            "backup_2", "backup_target_2", "bitmap", mode=case.mode, **ONE_WORKER),)))
        await close_target(sb, "backup_target_2")
        assert [(j.result, j.verdict) for j in v2.jobs] == [("completed", "valid")], v2
        b2 = v2.bitmaps[0]
        assert b2.count_after == case.after2 * G and b2.verified is True, b2
        assert b2.outcome == ("unchanged" if case.mode == "never" else "cleared")

    # the chains the verdicts call usable, checked against QEMU's own copies
    rebase(bsync1, ref0)
    if case.image == "valid":
        assert identical(bsync1, ref1), "a VALID image must be the restore point it claims"
    if case.failure == MID:
        assert not identical(bsync1, ref1), "a partial image is no restore point"
    base = bsync1 if usable_as_base(case.image) else ref0
    rebase(bsync2, base)
    assert identical(bsync2, ref2), f"backup #2 on {base.name} must match the disk"
