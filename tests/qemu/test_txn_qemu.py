"""Transactions against a real QEMU: both examples of the bitmaps documentation, with blkdebug.

Setup as in QEMU's iotest 124: two drives, a full backup anchoring bitmap0/bitmap1 (taken with
our own new-chain transaction), guest writes, then drive1 armed to fail its next read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit.common import SAMPLES, requires_qemu
from tui.core.base.errors import QMPCommandError
from tui.core.txn import GROUPED, INDIVIDUAL, Transaction, TransactionRun, load, prepare
from tui.core.txn.model import Action
from tui.demo.sandbox import QEMU_IMG, Sandbox, run

pytestmark = requires_qemu

DOC_COUNT = 458752  # the iotest 124 write pattern below dirties this many bytes


def absolute(txn: Transaction, sb: Sandbox) -> Transaction:
    """The sample's relative target paths placed in the sandbox directory."""
    acts = []
    for a in txn.actions:
        if a.type == "drive-backup":
            a = a.with_data(target=str(sb.path(a.data["target"])))
        acts.append(a)
    return Transaction(tuple(acts), txn.completion_mode)


async def write_pattern(sb: Sandbox, drive: int) -> None:
    for off, length in (("0", "512"), ("16M", "256k"), ("32736k", "64k")):
        await sb.write(drive, off, length, pattern=0x2C)


async def new_chain(sb: Sandbox, conn) -> None:
    """Full backups + bitmaps in one individual transaction (sample txn-new-chain.yaml)."""
    txn = absolute(load(SAMPLES / "txn-new-chain.yaml"), sb)
    prepared = prepare(txn, conn.model)
    assert prepared.ok, prepared.errors
    verdict = await TransactionRun(conn, prepared).run(timeout=60)
    assert verdict.all_succeeded, verdict
    assert {b.name for b in verdict.bitmaps} == set()  # add actions are not outcome entries
    assert any(n.endswith(f"bitmap bitmap0 starts from it: drive0's next incremental must be "
                          f"based on {sb.path('d0-full.qcow2')}") for n in verdict.next), verdict.next


def make_incr_targets(sb: Sandbox, n: int = 1) -> None:
    for d in (0, 1):
        full = sb.path(f"d{d}-full.qcow2")
        base = full if n == 1 else sb.path(f"d{d}-incr-{n - 1}.qcow2")
        run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
             str(sb.path(f"d{d}-incr-{n}.qcow2")), "64M"])


async def prepared_doc_example(sb: Sandbox, fleet, mode: str):
    conn = fleet["vm0"]
    await sb.write(0, 0, "1M", pattern=0x11)
    await sb.write(1, 0, "1M", pattern=0x11)
    await new_chain(sb, conn)
    await write_pattern(sb, 0)
    await write_pattern(sb, 1)
    make_incr_targets(sb)
    await sb.arm_read_error(1)
    name = "txn-incremental-individual.yaml" if mode == INDIVIDUAL else "txn-incremental-grouped.yaml"
    txn = absolute(load(SAMPLES / name), sb)
    assert txn.completion_mode == mode
    await conn.refresh_nodes()
    prepared = prepare(txn, conn.model)
    assert prepared.ok, prepared.errors
    # drive-backup is deprecated: a notice (no confirmation) with the blockdev-backup equivalent
    assert not prepared.warnings
    assert len(prepared.notices) == 2 and prepared.notices[0].fix is not None
    assert [a.job_id for a in prepared.transaction.actions] == ["drive0", "drive1"]
    for i in (0, 1):
        bm = conn.model.nodes[f"disk{i}"].bitmap(f"bitmap{i}")
        assert bm.count == DOC_COUNT
    return conn, prepared


def compare(sb: Sandbox, image: Path, drive: int) -> str:
    # -U: the source is open in QEMU (flushed by the caller)
    return run([QEMU_IMG, "compare", "-U", "-f", "qcow2", "-F", "qcow2", str(image),
                str(sb.image(drive))])


async def test_individual_partial_failure_matches_the_documentation(make_sandbox, fleet_for):
    sb = await make_sandbox(drives=2, failing=[1])
    fleet = await fleet_for(sb, job_poll_interval=0.1)
    conn, prepared = await prepared_doc_example(sb, fleet, INDIVIDUAL)
    verdict = await TransactionRun(conn, prepared).run(timeout=60)

    assert verdict.accepted and verdict.exit_code == 1
    jobs = {j.job_id: j for j in verdict.jobs}
    assert jobs["drive0"].result == "completed" and jobs["drive0"].error is None
    # what a backup ledger reads per job
    j0 = jobs["drive0"]
    assert (j0.image, j0.sync, j0.bitmap, j0.bitmap_outcome, j0.image_valid) == (
        str(sb.path("d0-incr-1.qcow2")), "incremental", "bitmap0", "cleared", True)
    assert (jobs["drive1"].bitmap_outcome, jobs["drive1"].image_valid) == ("restored", False)
    assert jobs["drive1"].result == "failed" and jobs["drive1"].error == "Input/output error"
    images = {Path(i.path).name: i.verdict for i in verdict.images}
    assert images == {"d0-incr-1.qcow2": "valid", "d1-incr-1.qcow2": "invalid"}
    bms = {(b.node, b.name): b for b in verdict.bitmaps}
    b0, b1 = bms[("disk0", "bitmap0")], bms[("disk1", "bitmap1")]
    assert b0.outcome == "cleared" and b0.count_before == DOC_COUNT and b0.count_after == 0
    assert b1.outcome == "restored" and b1.count_before == b1.count_after == DOC_COUNT
    assert b0.verified and b1.verified
    text = " | ".join(verdict.next)
    assert "a VM-wide point in time needs new backups of drive0 and drive1" in text
    assert f"drive0's next incremental must be based on {sb.path('d0-incr-1.qcow2')}" in text
    assert "d1-incr-1.qcow2 is INVALID" in text
    # the real bitmap agrees with the verdict
    assert conn.model.nodes["disk1"].bitmap("bitmap1").count == DOC_COUNT
    await sb.hmp('qemu-io drive0 "flush"')
    assert "identical" in compare(sb, sb.path("d0-incr-1.qcow2"), 0)


async def test_grouped_failure_cancels_restores_and_rerun_succeeds(make_sandbox, fleet_for):
    sb = await make_sandbox(drives=2, failing=[1])
    fleet = await fleet_for(sb, job_poll_interval=0.1)
    conn, prepared = await prepared_doc_example(sb, fleet, GROUPED)
    verdict = await TransactionRun(conn, prepared).run(timeout=60)

    assert verdict.accepted and verdict.exit_code == 1
    jobs = {j.job_id: j for j in verdict.jobs}
    assert jobs["drive0"].result == "cancelled"
    assert jobs["drive1"].result == "failed" and jobs["drive1"].error == "Input/output error"
    assert {i.verdict for i in verdict.images} == {"invalid"}
    for b in verdict.bitmaps:
        assert b.outcome == "restored" and b.count_before == b.count_after == DOC_COUNT
        assert b.verified
    assert any("re-run the same transaction" in n for n in verdict.next)
    assert any("no image of this transaction is usable" in n for n in verdict.next)

    # Re-run without the fault (blkdebug's error was "once"): both succeed, both images match.
    make_incr_targets(sb)  # recreate the invalid targets
    again = prepare(prepared.transaction, conn.model)
    assert again.ok, again.errors
    verdict2 = await TransactionRun(conn, again).run(timeout=60)
    assert verdict2.exit_code == 0, verdict2
    assert {i.verdict for i in verdict2.images} == {"valid"}
    assert all(b.outcome == "cleared" and b.count_after == 0 for b in verdict2.bitmaps)
    await sb.hmp('qemu-io drive0 "flush"')
    await sb.hmp('qemu-io drive1 "flush"')
    for d in (0, 1):
        assert "identical" in compare(sb, sb.path(f"d{d}-incr-1.qcow2"), d)


async def test_blockdev_backup_grouped_and_qmp_refusal(make_sandbox, fleet_for):
    """The non-deprecated form with blockdev-add'ed targets; a QMP error refuses before any job."""
    sb = await make_sandbox(drives=2)
    fleet = await fleet_for(sb, job_poll_interval=0.1)
    conn = fleet["vm0"]
    for d in (0, 1):
        await sb.add_bitmap(d, f"bitmap{d}")
        await sb.write(d, 0, "2M")
        img = sb.path(f"t{d}.qcow2")
        run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(img), "64M"])
        await conn.execute("blockdev-add", {"driver": "qcow2", "node-name": f"d{d}-incr-1",
                                            "file": {"driver": "file", "filename": str(img)}})
    txn = load(SAMPLES / "txn-incremental-blockdev.yaml")
    prepared = prepare(txn, conn.model)
    assert prepared.ok and not prepared.warnings, prepared.findings
    verdict = await TransactionRun(conn, prepared).run(timeout=60)
    assert verdict.exit_code == 0
    assert {Path(i.path).name for i in verdict.images} == {"t0.qcow2", "t1.qcow2"}
    assert all(b.outcome == "cleared" and b.count_before == 2 * 2**20 for b in verdict.bitmaps)

    # QEMU refuses in prepare (a target image that does not exist): exit 2, nothing started.
    bad = Transaction((Action("drive-backup", {"device": "drive0", "job-id": "x", "sync": "full",
                                               "mode": "existing", "format": "qcow2",
                                               "target": str(sb.path("missing.qcow2"))}),))
    refused = await TransactionRun(conn, prepare(bad, conn.model)).run(timeout=30)
    assert not refused.accepted and refused.exit_code == 2
    assert "Could not open" in (refused.error or "")
    assert "x" not in conn.model.jobs


async def test_bitmap_mode_always_grouped_partial_clear(make_sandbox, fleet_for):
    """Grouped, sync bitmap, bitmap-mode always, drive1 fails a read: drive0 is cancelled yet its
    bitmap is cleared (everything was copied), drive1's is partly synced (what was not copied
    stays, as in iotest 257 "intermediate"); both images are INCOMPLETE bases."""
    sb = await make_sandbox(drives=2, failing=[1])
    fleet = await fleet_for(sb, job_poll_interval=0.1)
    conn = fleet["vm0"]
    for d in (0, 1):
        await sb.add_bitmap(d, f"bitmap{d}")
        await write_pattern(sb, d)
        await conn.execute("blockdev-add", {"driver": "null-co", "node-name": f"t{d}",
                                            "size": 64 * 2**20})
    await sb.arm_read_error(1)
    txn = Transaction(tuple(
        Action("blockdev-backup", {"device": f"disk{d}", "job-id": f"j{d}", "sync": "bitmap",
                                   "bitmap": f"bitmap{d}", "bitmap-mode": "always",
                                   "target": f"t{d}"}) for d in (0, 1)), GROUPED)
    prepared = prepare(txn, conn.model)
    assert prepared.ok, prepared.findings
    verdict = await TransactionRun(conn, prepared).run(timeout=60)
    assert [j.result for j in verdict.jobs] == ["cancelled", "failed"]
    b0, b1 = verdict.bitmaps
    # measured: drive0 had copied everything before the cancel, so nothing is left
    assert (b0.outcome, b0.partial, b1.outcome, b1.partial) == (
        "cleared", False, "partly synced", True)
    assert b0.count_after == 0 and 0 < b1.count_after < DOC_COUNT
    assert b0.verified and b1.verified
    assert [i.verdict for i in verdict.images] == ["incomplete", "incomplete"]
    assert not any(n.endswith("re-run the same transaction") for n in verdict.next)
    assert any("do not re-run the same transaction" in n for n in verdict.next)


async def test_connection_lost_mid_job_counts_as_lost(make_sandbox, fleet_for):
    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb, job_poll_interval=0.1)
    conn = fleet["vm0"]
    await sb.write(0, 0, "8M")
    await conn.execute("blockdev-add", {"driver": "null-co", "node-name": "t0",
                                        "size": 64 * 2**20})
    await sb.add_bitmap(0, "bitmap0")
    await sb.write(0, "8M", "8M")
    await conn.refresh_nodes()
    txn = Transaction((Action("blockdev-backup", {"device": "drive0", "sync": "incremental",
                                                  "bitmap": "bitmap0", "target": "t0",
                                                  "speed": 65536}),))
    run_ = TransactionRun(conn, prepare(txn, conn.model))
    assert (await run_.send()).sent
    assert run_.job_ids == ["drive0"]
    assert conn.model.jobs["drive0"].node == "disk0"  # note_job_node
    sb.kill()
    verdict = await run_.wait(timeout=30)
    assert verdict.exit_code == 1
    assert verdict.jobs[0].result == "lost" and verdict.to_dict()["jobs"][0]["result"] == "failed"
    assert verdict.images[0].verdict == "invalid"
    assert [(b.outcome, b.verified) for b in verdict.bitmaps] == [("restored", None)]  # unmeasured


async def test_qemu_itself_refuses_what_the_grouped_check_refuses(sandbox, fleet_for):
    """The pre-flight check is not stricter than QEMU: sent anyway, QEMU refuses it too."""
    await sandbox.add_bitmap(0, "bitmap0")
    fleet = await fleet_for(sandbox)
    conn = fleet["vm0"]
    txn = Transaction((Action("block-dirty-bitmap-clear", {"node": "disk0", "name": "bitmap0"}),),
                      GROUPED)
    assert any("grouped" in f.message for f in prepare(txn, conn.model).errors)
    with pytest.raises(QMPCommandError) as err:
        await conn.execute("transaction", txn.to_qmp())
    assert "does not support" in err.value.desc.lower() and "grouped" in err.value.desc
