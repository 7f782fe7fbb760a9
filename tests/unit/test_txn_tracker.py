"""The tracker's bookkeeping with scripted events (what QEMU cannot be made to do on demand:
a stale job record of an earlier run, an end event that never comes)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from tests.kit.common import wait_for
from tui.core.base.errors import (
    AuditError,
    BitmapTuiError,
    CommandTimeoutError,
    ConnectionLostError,
    NotConnectedError,
    QMPCommandError,
    ReadOnlyError,
)
from tui.core.model import reducer
from tui.core.model.state import Bitmap, Job, JobResult, LinkState, Node
from tui.core.model.store import Store
from tui.core.txn import Action, Transaction, TransactionRun, prepare
from tui.core.txn import tracker as tracker_mod
from tui.core.txn.tracker import Sent


class FakeConn:
    """Just enough of a Connection: a Store, scripted replies, recorded commands."""

    name = "vm0"

    def __init__(self, refuse: str | None = None, fail: BitmapTuiError | None = None) -> None:
        self.store = Store()
        self.store.add_connection("vm0", "unix:/x")
        nodes = {f"disk{i}": Node(f"disk{i}", "qcow2", f"/i/d{i}.qcow2", 1 << 26, device=f"drive{i}",
                                  bitmaps=(Bitmap(f"bitmap{i}", 65536, 458752, True, False),))
                 for i in (0, 1)}
        nodes["t0"] = Node("t0", "qcow2", "/b/t0.qcow2", 1 << 26)
        nodes["t1"] = Node("t1", "qcow2", "/b/t1.qcow2", 1 << 26)
        self.store.update("vm0", lambda c: replace(c, state=LinkState.CONNECTED, nodes=nodes,
                                                   commands=frozenset({"transaction"})))
        self.sent: list[tuple[str, Any]] = []
        self.refuse = refuse
        self.fail = fail

    async def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> Any:
        self.sent.append((command, arguments))
        if self.refuse:
            raise QMPCommandError(command, "GenericError", self.refuse)
        if self.fail is not None and command == "transaction":
            raise self.fail
        return {}

    def note_job_node(self, job_id: str, node: str) -> None:
        self.store.update(self.name, lambda c: reducer.set_job_node(c, job_id, node))

    async def refresh_nodes(self) -> None:
        return None

    def event(self, name: str, **data: Any) -> None:
        self.store.apply_event("vm0", {"event": name, "data": data})


def txn(mode: str = "individual") -> Transaction:
    return Transaction(tuple(
        Action("blockdev-backup", {"device": f"drive{d}", "sync": "incremental",
                                   "bitmap": f"bitmap{d}", "target": f"t{d}"}) for d in (0, 1)), mode)


async def test_results_come_from_events_and_stale_records_are_forgotten() -> None:
    conn = FakeConn()
    # an earlier run's job with the same id completed: it must not count for this run
    conn.store.update("vm0", lambda c: replace(c, jobs={"drive1": Job(
        "drive1", "backup", "concluded", result=JobResult.COMPLETED)}))
    run = TransactionRun(conn, prepare(txn(), conn.store.connection("vm0")))
    assert (await run.send()).sent
    assert conn.sent[-1][0] == "transaction"
    assert conn.store.connection("vm0").jobs["drive1"].result is None
    waiter = asyncio.ensure_future(run.wait(timeout=30))
    conn.event("JOB_STATUS_CHANGE", id="drive0", status="running")
    conn.event("BLOCK_JOB_COMPLETED", device="drive0", type="backup", len=10, offset=10, speed=0)
    await asyncio.sleep(0.05)
    assert not waiter.done()  # drive1 has not ended: its old record was dropped
    assert [j.result for j in run.jobs()] == ["completed", None]
    conn.event("BLOCK_JOB_ERROR", device="drive1", operation="read", action="report")
    conn.event("BLOCK_JOB_COMPLETED", device="drive1", type="backup", len=10, offset=3, speed=0,
               error="Input/output error")
    verdict = await waiter
    assert [(j.job_id, j.result, j.error) for j in verdict.jobs] == [
        ("drive0", "completed", None), ("drive1", "failed", "Input/output error")]
    assert conn.store.connection("vm0").jobs["drive0"].node == "disk0"


async def test_a_job_gone_without_its_end_event_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracker_mod, "END_EVENT_GRACE", 0.2)
    conn = FakeConn()
    run = TransactionRun(conn, prepare(txn(), conn.store.connection("vm0")))
    assert (await run.send()).sent
    waiter = asyncio.ensure_future(run.wait(timeout=30))
    conn.event("BLOCK_JOB_CANCELLED", device="drive0", type="backup", len=10, offset=1, speed=0)
    # drive1 disappears from query-jobs and its event never arrives (events were missed)
    conn.store.update("vm0", lambda c: reducer.apply_jobs(c, {}))
    verdict = await asyncio.wait_for(waiter, 10)
    assert [j.result for j in verdict.jobs] == ["cancelled", "lost"]
    assert verdict.exit_code == 1
    assert "not trusted" in (verdict.jobs[1].error or "")


async def test_qmp_refusal_and_check_refusal_send_nothing_more() -> None:
    conn = FakeConn(refuse="Job ID 'drive0' already in use")
    run = TransactionRun(conn, prepare(txn(), conn.store.connection("vm0")))
    assert (await run.send()).state is Sent.REFUSED
    assert run.verdict is not None and run.verdict.exit_code == 2
    assert run.error == "QEMU refused the transaction: Job ID 'drive0' already in use"
    conn2 = FakeConn()
    bad = Transaction((Action("block-dirty-bitmap-merge",
                              {"node": "disk0", "target": "bitmap0", "bitmaps": []}),))
    run2 = TransactionRun(conn2, prepare(bad, conn2.store.connection("vm0")))
    verdict = await run2.run()
    assert not verdict.accepted and conn2.sent == []
    assert "at least one source" in (verdict.error or "")


@pytest.mark.parametrize("fail,state", [
    (ConnectionLostError("the connection dropped before QEMU answered"), Sent.UNKNOWN),
    (CommandTimeoutError("QEMU did not answer within 10 s"), Sent.UNKNOWN),
    (ReadOnlyError("read-only mode: 'transaction' was not sent"), Sent.REFUSED),
    (AuditError("not sent: the audit log is not writable"), Sent.REFUSED),
    (NotConnectedError("vm0 is not connected"), Sent.REFUSED),
])
async def test_a_lost_reply_is_outcome_unknown_and_a_refusal_is_refused(fail, state) -> None:
    """The send outcome is typed: only what certainly did nothing is REFUSED."""
    conn = FakeConn(fail=fail)
    run = TransactionRun(conn, prepare(txn(), conn.store.connection("vm0")))
    outcome = await run.send()
    assert outcome.state is state and outcome.reason == str(fail) and not outcome.sent
    assert not run.accepted


async def test_on_change_is_called_while_following() -> None:
    conn = FakeConn()
    calls: list[int] = []
    run = TransactionRun(conn, prepare(txn("grouped"), conn.store.connection("vm0")),
                         on_change=lambda: calls.append(1))
    assert (await run.send()).sent
    waiter = asyncio.ensure_future(run.wait(timeout=30))
    conn.event("JOB_STATUS_CHANGE", id="drive0", status="waiting")
    await wait_for(lambda: len(calls) >= 2, 5, "notifications")
    conn.event("BLOCK_JOB_COMPLETED", device="drive1", type="backup", len=1, offset=0, speed=0,
               error="Input/output error")
    conn.event("BLOCK_JOB_CANCELLED", device="drive0", type="backup", len=1, offset=1, speed=0)
    verdict = await waiter
    assert [i.verdict for i in verdict.images] == ["invalid", "invalid"]
    assert [b.outcome for b in verdict.bitmaps] == ["restored", "restored"]


async def test_apply_transaction_in_one_call() -> None:
    from tui.core.txn import apply_transaction

    conn = FakeConn()
    first = txn().actions[0]
    waits = txn().with_action(first.with_data(auto_finalize=False), 0)
    refused = await apply_transaction(conn, waits)  # a warning, not accepted
    assert refused.exit_code == 2 and "warning not accepted" in (refused.error or "")
    assert conn.sent == [] and any("auto-finalize" in c for c in refused.checks)
    bad = await apply_transaction(conn, txn().with_mode("grouped").with_action(
        Action("block-dirty-bitmap-clear", {"node": "disk0", "name": "bitmap0"})))
    assert bad.exit_code == 2 and "grouped" in (bad.error or "") and conn.sent == []
    task = asyncio.ensure_future(apply_transaction(conn, txn(), timeout=30))
    await wait_for(lambda: any(c == "transaction" for c, _ in conn.sent), 5, "the send")
    for d in (0, 1):
        conn.event("BLOCK_JOB_COMPLETED", device=f"drive{d}", type="backup", len=1, offset=1,
                   speed=0)
    verdict = await task
    assert verdict.exit_code == 0
    assert [(j.job_id, j.bitmap_outcome, j.image) for j in verdict.jobs] == [
        ("drive0", "cleared", "/b/t0.qcow2"), ("drive1", "cleared", "/b/t1.qcow2")]


async def test_always_cancel_is_cleared_only_when_the_end_event_says_all_was_copied() -> None:
    """bitmap-mode always, both cancelled: drive0's end event says everything was copied
    (len = offset), drive1's says nothing was counted yet (len 0 though its bitmap had bits):
    only drive0's bitmap may be called cleared."""
    conn = FakeConn()
    always = Transaction(tuple(
        Action("blockdev-backup", {"device": f"drive{d}", "sync": "bitmap", "bitmap": f"bitmap{d}",
                                   "bitmap-mode": "always", "target": f"t{d}"}) for d in (0, 1)))
    run = TransactionRun(conn, prepare(always, conn.store.connection("vm0")))
    assert (await run.send()).sent
    waiter = asyncio.ensure_future(run.wait(timeout=30))
    conn.event("BLOCK_JOB_CANCELLED", device="drive0", type="backup", len=458752, offset=458752,
               speed=0)
    conn.event("BLOCK_JOB_CANCELLED", device="drive1", type="backup", len=0, offset=0, speed=0)
    verdict = await waiter
    assert [b.outcome for b in verdict.bitmaps] == ["cleared", "partly synced"]
    assert [i.verdict for i in verdict.images] == ["incomplete", "incomplete"]
