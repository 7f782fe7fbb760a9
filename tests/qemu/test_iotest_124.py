"""QEMU's iotest 124 replayed through the product: the transaction, failure, pause and grouped
cases, each followed by what the verdict advises, checked with ``qemu-img compare``.

Each failure case (one row of :data:`CASES`) starts a chain per drive with the product's own
transaction (add bitmap + full backup), makes 124's writes, arms a read error on one drive,
sends one incremental per drive, and asserts the job results, image verdicts, bitmap outcomes
and counts. Then it does literally what the verdict says (re-run the same transaction, or back
up each drive on the base named for it), with 124's second round of writes in between, and
compares every resulting chain with the live disk.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from qemu.qmp.qmp_client import ExecInterruptedError

from tests.kit.common import requires_qemu, wait_for
from tests.kit.iotest import (
    backup,
    backup_action,
    bitmap_count,
    close_target,
    create_image,
    identical,
    open_target,
    qemu_and_product,
    send,
)
from tui.core.model.state import LinkState
from tui.core.txn import GROUPED, INDIVIDUAL, Action, Transaction, prepare
from tui.core.txn.verdict import Verdict
from tui.demo.sandbox import Sandbox

pytestmark = [requires_qemu, pytest.mark.qemu]

FIRST_WRITES = (("0xab", "0", "512"), ("0xfe", "16M", "256k"), ("0x64", "32736k", "64k"))
SECOND_WRITES = (("0x9a", "0", "512"), ("0x55", "8M", "352k"), ("0x78", "15872k", "1M"))
FIRST_COUNT = 458752  # bytes FIRST_WRITES dirty at 64 KiB


async def writes(sb: Sandbox, drive: int, pattern: tuple[tuple[str, str, str], ...]) -> None:
    for byte, off, length in pattern:
        await sb.hmp(f'qemu-io drive{drive} "write -P{byte} {off} {length}"')


async def new_chain(sb: Sandbox, conn, drives: int) -> dict[int, Path]:
    """bitmap{d} and a full backup of each drive in one transaction, through the product."""
    fulls = {}
    actions: list[Action] = []
    for d in range(drives):
        fulls[d] = create_image(sb.path(f"full{d}.qcow2"))
        await open_target(sb, conn, f"full{d}", fulls[d])
        actions += [Action("block-dirty-bitmap-add", {"node": f"drive{d}", "name": f"bitmap{d}"}),
                    backup_action(f"full-{d}", f"full{d}", "full", bitmap=None, drive=d)]
    v = await backup(conn, Transaction(tuple(actions)))
    assert v.all_succeeded, v
    for d in range(drives):
        await close_target(sb, f"full{d}")
        assert any(n.endswith(f"drive{d}'s next incremental must be based on {fulls[d]}")
                   for n in v.next), v.next
    return fulls


@dataclass(frozen=True)
class Drive:
    """One drive's incremental in the transaction under test, and what must come of it."""

    sync: str = "incremental"
    mode: str | None = None
    written: bool = True
    extra: dict = field(default_factory=dict)
    result: str = "completed"
    verdict: str = "valid"
    outcome: str = "cleared"
    count_after: int = 0


@dataclass(frozen=True)
class Case:
    name: str
    completion: str
    drives: tuple[Drive, ...]
    failing: int  # the drive whose first read after the arming flush fails once
    rerun_same: bool  # the advice is to re-run the same transaction
    paused: bool = False  # on-source-error stop: the job pauses and is resumed


CANCELLED_RESTORED = Drive(result="cancelled", verdict="invalid", outcome="restored",
                           count_after=FIRST_COUNT)
FAILED_RESTORED = Drive(result="failed", verdict="invalid", outcome="restored",
                        count_after=FIRST_COUNT)
CASES = [
    # 124 test_transaction_failure: grouped, drive1 fails, drive0 cancelled, both restored;
    # re-running the same transaction gives two valid incrementals.
    Case("transaction_failure", GROUPED, (CANCELLED_RESTORED, FAILED_RESTORED), 1, True),
    # 124 test_transaction_failure_race: drive0 has nothing to copy and is cancelled cleanly.
    Case("transaction_failure_race", GROUPED,
         (Drive(written=False, result="cancelled", verdict="invalid", outcome="restored"),
          FAILED_RESTORED), 1, True),
    # 124 test_incremental_failure: the failed incremental leaves the bitmap restored; the next
    # incremental (on the full) holds both rounds of writes.
    Case("incremental_failure", INDIVIDUAL, (FAILED_RESTORED,), 0, False),
    # individual: the healthy drive's incremental is valid, the other restored.
    Case("individual_partial_failure", INDIVIDUAL, (Drive(), FAILED_RESTORED), 1, False),
    # grouped with a bitmap-mode always job (throttled so it is cancelled part-way): its bitmap
    # is partly synced and its image INCOMPLETE, so "re-run the same transaction" would lose
    # drive0's changes; the advice per drive is followed instead.
    Case("grouped_always_and_failing", GROUPED,
         (Drive(sync="bitmap", mode="always", extra={"speed": 65536}, result="cancelled",
                verdict="incomplete", outcome="partly synced", count_after=-1),
          FAILED_RESTORED), 1, False),
    # 124 test_incremental_pause: on-source-error stop pauses the job with the bitmap frozen at
    # 458752; resumed, it completes and the bitmap is cleared.
    Case("incremental_pause", INDIVIDUAL,
         (Drive(extra={"on-source-error": "stop"}),), 0, False, paused=True),
]


def incremental_txn(case: Case, targets: list[str]) -> Transaction:
    return Transaction(tuple(
        backup_action(f"incr-{d}", targets[d], dr.sync, bitmap=f"bitmap{d}", mode=dr.mode,
                      drive=d, **dr.extra)
        for d, dr in enumerate(case.drives)), case.completion)


async def open_incrementals(sb: Sandbox, conn, bases: dict[int, Path], n: int) -> list[str]:
    names = []
    for d, base in bases.items():
        name = f"incr{d}-{n}"
        await open_target(sb, conn, name, create_image(sb.path(f"{name}.qcow2"), base))
        names.append(name)
    return names


async def paused_then_resumed(sb: Sandbox, conn, job_id: str) -> None:
    """124: BLOCK_JOB_ERROR with action stop, the bitmap busy at 458752 meanwhile; then resume."""
    await wait_for(lambda: (j := conn.model.jobs.get(job_id)) is not None and j.paused
                   and j.io_errors == 1, 30, "the job paused on its read error")
    await conn.refresh_nodes()
    bm = conn.model.nodes["disk0"].bitmap("bitmap0")
    assert (bm.count, bm.busy, bm.recording) == (FIRST_COUNT, True, True)
    await sb.qmp("block-job-resume", {"device": job_id})


def check_first_run(case: Case, v: Verdict, images: dict[int, Path]) -> None:
    jobs = {j.job_id: j for j in v.jobs}
    for d, dr in enumerate(case.drives):
        j = jobs[f"incr-{d}"]
        assert (j.result, j.verdict, j.bitmap_outcome) == (dr.result, dr.verdict, dr.outcome), v
        if d == case.failing and dr.result == "failed":
            assert j.error == "Input/output error"
        b = next(b for b in v.bitmaps if b.name == f"bitmap{d}")
        assert b.count_before == (FIRST_COUNT if dr.written else 0)
        if dr.count_after >= 0:
            assert b.count_after == dr.count_after, b
        else:  # partly synced: what was not copied is left
            assert 0 < b.count_after < FIRST_COUNT and b.count_after == b.left_to_copy, b
        assert b.verified is True, b
    text = "\n".join(v.next)
    assert text.count("re-run the same transaction") == (1 if case.rerun_same else 0) or (
        not case.rerun_same and "do not re-run the same transaction" in text), text
    assert not any(n.startswith("check bitmap") for n in v.next), v.next


def advised_bases(case: Case, v: Verdict, fulls: dict[int, Path],
                  images: dict[int, Path]) -> dict[int, Path]:
    """The base each drive's next incremental must have, read from the verdict's own words."""
    text = "\n".join(v.next)
    bases = {}
    for d in range(len(case.drives)):
        if f"drive{d}'s next incremental must be based on {images[d]}" in text or (
                f"drive{d}'s next incremental with bitmap{d} must be based on {images[d]}" in text):
            bases[d] = images[d]
        else:
            assert (f"drive{d}'s next incremental must be based on its last valid image (the one "
                    f"before {images[d]})") in text, text
            bases[d] = fulls[d]
    return bases


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_iotest_124(case: Case, tmp_path: Path) -> None:
    n = len(case.drives)
    async with qemu_and_product(tmp_path, drives=n, failing=[case.failing]) as (sb, conn):
        for d in range(n):
            await writes(sb, d, (("0x11", "0", "1M"),))
        fulls = await new_chain(sb, conn, n)
        for d, dr in enumerate(case.drives):
            if dr.written:
                await writes(sb, d, FIRST_WRITES)
        await sb.arm_read_error(case.failing)
        targets = await open_incrementals(sb, conn, fulls, 1)
        images = {d: sb.path(f"{t}.qcow2") for d, t in enumerate(targets)}
        txn = incremental_txn(case, targets)
        run1 = await send(conn, txn)
        waiting = asyncio.ensure_future(run1.wait(60))
        if case.paused:
            await paused_then_resumed(sb, conn, "incr-0")
        v1 = await waiting
        for t in targets:
            await close_target(sb, t)
        check_first_run(case, v1, images)

        if case.rerun_same:
            # what the verdict says: delete the images, re-run the same transaction
            assert all(i.verdict == "invalid" for i in v1.images)
            bases = dict(fulls)
            again = txn
        else:
            bases = advised_bases(case, v1, fulls, images)
            again = None
        for d in range(n):
            await writes(sb, d, SECOND_WRITES)
        if again is not None:
            for d in range(n):
                create_image(sb.path(f"incr{d}-1.qcow2"), fulls[d])
                await open_target(sb, conn, f"incr{d}-1", sb.path(f"incr{d}-1.qcow2"))
            finals = [f"incr{d}-1" for d in range(n)]
        else:
            finals = await open_incrementals(sb, conn, bases, 2)
            again = Transaction(tuple(
                backup_action(f"incr-{d}-2", finals[d], "incremental", bitmap=f"bitmap{d}",
                              drive=d) for d in range(n)), INDIVIDUAL)
        v2 = await backup(conn, again)
        for t in finals:
            await close_target(sb, t)
        assert [(j.result, j.verdict) for j in v2.jobs] == [("completed", "valid")] * n, v2
        assert all(b.outcome == "cleared" and b.count_after == 0 and b.verified
                   for b in v2.bitmaps), v2.bitmaps
        for d in range(n):
            await sb.hmp(f'qemu-io drive{d} "flush"')
            assert identical(sb.path(f"{finals[d]}.qcow2"), sb.image(d)), (
                f"drive{d}: the chain the advice built differs from the disk")


async def test_incremental_transaction(tmp_path: Path) -> None:
    """124 test_incremental_transaction: [clear bitmap0, clear bitmap1, full backup] puts both
    bitmaps in sync with the full; an incremental through each then matches the disk."""
    async with qemu_and_product(tmp_path, drives=1) as (sb, conn):
        await sb.add_bitmap(0, "bitmap0")
        await writes(sb, 0, FIRST_WRITES)
        await sb.add_bitmap(0, "bitmap1")
        full = create_image(sb.path("full0.qcow2"))
        await open_target(sb, conn, "full0", full)
        v = await backup(conn, Transaction((
            Action("block-dirty-bitmap-clear", {"node": "drive0", "name": "bitmap0"}),
            Action("block-dirty-bitmap-clear", {"node": "drive0", "name": "bitmap1"}),
            backup_action("full-0", "full0", "full", bitmap=None))))
        await close_target(sb, "full0")
        assert v.all_succeeded and [i.verdict for i in v.images] == ["valid"]
        assert [(b.name, b.outcome) for b in v.bitmaps] == [("bitmap0", "cleared"),
                                                            ("bitmap1", "cleared")]
        assert (f"{full} is a full backup of drive0 and bitmap bitmap0 and bitmap1 starts from it:"
                f" drive0's next incremental must be based on {full}") in v.next
        await writes(sb, 0, SECOND_WRITES)
        await conn.refresh_nodes()
        assert bitmap_count(conn, "bitmap0") == bitmap_count(conn, "bitmap1") > 0
        for name in ("bitmap0", "bitmap1"):
            img = create_image(sb.path(f"incr-{name}.qcow2"), full)
            await open_target(sb, conn, f"t-{name}", img)
            vi = await backup(conn, Transaction((backup_action(
                f"incr-{name}", f"t-{name}", "incremental", bitmap=name),)))
            await close_target(sb, f"t-{name}")
            assert vi.all_succeeded and vi.bitmaps[0].verified
            await sb.hmp('qemu-io drive0 "flush"')
            assert identical(img, sb.image(0))


async def test_two_backups_of_one_drive_by_device_name_are_refused_and_qemu_stays_up(
        tmp_path: Path) -> None:
    """The transaction of the issue's first defect: refused before sending; QEMU is still up.
    Sent anyway (on a throw-away QEMU), QEMU 7.2 aborts: the refusal is what keeps the VM."""
    async with qemu_and_product(tmp_path, drives=1) as (sb, conn):
        await sb.add_bitmap(0, "bitmap0")
        await writes(sb, 0, FIRST_WRITES)
        for t in ("ta", "tb"):
            await open_target(sb, conn, t, create_image(sb.path(f"{t}.qcow2")))
        txn = Transaction((backup_action("a", "ta", "incremental"),
                           backup_action("b", "tb", "full", bitmap=None)))
        prepared = prepare(txn, conn.model)
        assert [f.index for f in prepared.errors] == [1]
        assert "abort QEMU 7.2" in prepared.errors[0].message
        assert (await sb.qmp("query-status"))["status"] == "prelaunch"
        assert conn.model.state is LinkState.CONNECTED
        with pytest.raises(ExecInterruptedError):  # the monitor went away mid-command
            await sb.qmp("transaction", prepared.transaction.to_qmp())
        assert sb.proc is not None
        await asyncio.to_thread(sb.proc.wait, 10)
        assert sb.proc.returncode != 0


async def test_rerunning_the_same_transaction_after_an_always_job_would_lose_changes(
        tmp_path: Path) -> None:
    """Why the advice is per drive: after a grouped failure, re-running the same transaction
    (what was advised before for every grouped failure) gives drive0 a chain that differs from
    its disk, because bitmap-mode always had already synced its bitmap. The product does not
    advise it."""
    async with qemu_and_product(tmp_path, drives=2, failing=[1]) as (sb, conn):
        for d in (0, 1):
            await writes(sb, d, (("0x11", "0", "1M"),))
        fulls = await new_chain(sb, conn, 2)
        for d in (0, 1):
            await writes(sb, d, FIRST_WRITES)
        await sb.arm_read_error(1)
        case = CASES[[c.name for c in CASES].index("grouped_always_and_failing")]
        targets = await open_incrementals(sb, conn, fulls, 1)
        txn = incremental_txn(case, targets)
        v = await backup(conn, txn)
        for t in targets:
            await close_target(sb, t)
        assert [b.outcome for b in v.bitmaps] == ["partly synced", "restored"]
        assert not any(n.endswith("re-run the same transaction") for n in v.next), v.next
        # done anyway: fresh targets on the fulls, the same transaction
        for t in await open_incrementals(sb, conn, fulls, 1):
            assert t in targets
        again = await backup(conn, txn)
        for t in targets:
            await close_target(sb, t)
        assert again.all_succeeded
        for d in (0, 1):
            await sb.hmp(f'qemu-io drive{d} "flush"')
        assert not identical(sb.path("incr0-1.qcow2"), sb.image(0)), "drive0 lost its changes"
        assert identical(sb.path("incr1-1.qcow2"), sb.image(1))
