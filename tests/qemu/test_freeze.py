"""freeze: true against a real QEMU and a fake guest agent (hangs, dies while frozen, a cancelled
run); the real qemu-ga in a real guest is in tests/qemu/test_freeze_guest.py."""

from __future__ import annotations

import asyncio

import pytest

import tui.core.chains.freeze as freeze_mod
from tests.kit.common import make_policy, requires_qemu, wait_for
from tests.kit.fakeagent import FakeAgent
from tui.core.base.errors import AgentError
from tui.core.chains.points import list_points
from tui.core.chains.run import run_policy
from tui.core.ledger.points_repository import PointsLedger
from tui.core.ledger.rows import ImageState
from tui.core.qmp.agent import GuestAgent

pytestmark = requires_qemu


@pytest.fixture(autouse=True)
def short_timeouts(monkeypatch):
    monkeypatch.setattr(freeze_mod, "FREEZE_TIMEOUT", 1.0)
    monkeypatch.setattr(freeze_mod, "THAW_TIMEOUT", 1.0)


def frozen_policy(sb, **kw):
    return make_policy("p", {"connection": "vm0", "drives": ["drive0", "drive1"],
                                  "bitmap": "bm", "target_dir": str(sb.dir), "freeze": True, **kw})


async def backup_jobs(sb):
    return [j["id"] for j in await sb.qmp("query-jobs") if j["id"].startswith("bt")]


async def test_agent_client_syncs_past_stale_replies(tmp_path):
    agent = await FakeAgent(tmp_path / "qga.sock").start()
    async with GuestAgent(f"unix:{agent.path}") as ga:
        assert await ga.status() == "thawed"
        assert await ga.freeze() == 1 and await ga.status() == "frozen"
        assert await ga.thaw() == 1
        with pytest.raises(AgentError, match="has not been found"):
            await ga.execute("guest-no-such")
    assert agent.log[:2] == ["guest-sync-delimited", "guest-fsfreeze-status"]
    await agent.stop()
    with pytest.raises(AgentError, match="No such file"):
        await GuestAgent(f"unix:{agent.path}", timeout=1).connect()


async def test_frozen_exactly_from_before_the_transaction_until_the_jobs_started(
        make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=2)
    fleet = await fleet_for(sb)
    ledger = PointsLedger(tmp_path / "l.sqlite")
    agent = await FakeAgent(tmp_path / "qga.sock").start()
    seen: dict[str, list[str]] = {}

    async def on_freeze():
        seen["at freeze"] = await backup_jobs(sb)

    async def on_thaw():
        seen["at thaw"] = await backup_jobs(sb)

    agent.on_freeze, agent.on_thaw = on_freeze, on_thaw
    res = await run_policy(fleet["vm0"], ledger, frozen_policy(sb), timeout=60,
                           guest_agent=f"unix:{agent.path}")
    assert res.exit_code == 0, res
    assert seen["at freeze"] == []
    assert sorted(seen["at thaw"]) == [ledger.job_id(res.txn_ids[-1], i) for i in (0, 1)]
    assert not agent.frozen
    assert [p.frozen for p in list_points(ledger)] == [True, True]
    assert ledger.unthawed("vm0") == []
    # Without an agent address a freeze policy is refused before anything is sent.
    refused = await run_policy(fleet["vm0"], ledger, frozen_policy(sb))
    assert refused.exit_code == 2 and "has no guest_agent" in (refused.refused or "")
    # A policy without freeze never talks to the agent.
    n = len(agent.log)
    plain = make_policy("q", {"connection": "vm0", "drives": ["drive0"], "bitmap": "bm2",
                                   "target_dir": str(sb.dir), "pattern": "q-{n}.qcow2"})
    assert (await run_policy(fleet["vm0"], ledger, plain, guest_agent=f"unix:{agent.path}")
            ).exit_code == 0
    assert len(agent.log) == n
    await agent.stop()
    ledger.close()


async def test_hanging_agent_refuses_the_backup_and_is_thawed_later(make_sandbox, fleet_for,
                                                                    tmp_path):
    sb = await make_sandbox(drives=2)
    fleet = await fleet_for(sb)
    ledger = PointsLedger(tmp_path / "l.sqlite")
    agent = await FakeAgent(tmp_path / "qga.sock", mode="hang").start()
    addr = f"unix:{agent.path}"
    res = await run_policy(fleet["vm0"], ledger, frozen_policy(sb), timeout=60, guest_agent=addr)
    assert res.exit_code == 2 and "freezing the guest failed" in (res.refused or "")
    assert "the thaw failed too" in (res.refused or "")
    assert await backup_jobs(sb) == []  # nothing was sent
    assert agent.log.count("guest-fsfreeze-freeze") == 1
    # The thaw's sync was never answered: the thaw itself was written all the same.
    assert agent.log[-2:] == ["guest-sync-delimited", "guest-fsfreeze-thaw"]
    assert len(ledger.unthawed("vm0")) == 1  # maybe frozen: remembered
    # The agent recovers: the next run thaws first, then freezes for its own backup.
    await agent.stop()
    agent2 = await FakeAgent(tmp_path / "qga.sock").start()
    res2 = await run_policy(fleet["vm0"], ledger, frozen_policy(sb), timeout=60, guest_agent=addr)
    assert res2.exit_code == 0, res2
    cmds = [c for c in agent2.log if c != "guest-sync-delimited"]
    assert cmds == ["guest-fsfreeze-thaw", "guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]
    assert ledger.unthawed("vm0") == []
    await agent2.stop()
    ledger.close()


async def test_a_slow_freeze_is_thawed_when_it_completes(make_sandbox, fleet_for, tmp_path):
    # An agent that handles one command at a time needs longer to freeze than the run waits:
    # the run gives up, and the thaw it wrote runs as soon as the freeze is done.
    sb = await make_sandbox(drives=2)
    fleet = await fleet_for(sb)
    ledger = PointsLedger(tmp_path / "l.sqlite")
    agent = await FakeAgent(tmp_path / "qga.sock", freeze_seconds=3.0).start()
    res = await run_policy(fleet["vm0"], ledger, frozen_policy(sb), timeout=60,
                           guest_agent=f"unix:{agent.path}")
    assert res.exit_code == 2 and "freezing the guest failed" in (res.refused or "")
    assert "guest-fsfreeze-status" in (res.refused or "") and "may still be frozen" in (
        res.refused or "")
    assert await backup_jobs(sb) == []  # nothing was sent
    assert agent.done == []  # still freezing when the run gave up
    await wait_for(lambda: agent.done == ["frozen", "thawed"], 10, "the thaw after the freeze")
    assert not agent.frozen
    assert len(ledger.unthawed("vm0")) == 1  # not confirmed: the next frozen run thaws first
    await agent.stop()
    ledger.close()


async def test_agent_dying_while_frozen_keeps_the_backup_and_says_so(make_sandbox, fleet_for,
                                                                     tmp_path):
    sb = await make_sandbox(drives=2)
    fleet = await fleet_for(sb)
    ledger = PointsLedger(tmp_path / "l.sqlite")
    agent = await FakeAgent(tmp_path / "qga.sock", mode="die-frozen").start()
    res = await run_policy(fleet["vm0"], ledger, frozen_policy(sb), timeout=60,
                           guest_agent=f"unix:{agent.path}")
    # The transaction was sent while frozen, so the points are consistent; the thaw failed.
    assert {d.state for d in res.drives} == {ImageState.VALID}
    assert any("may still be frozen" in n for n in res.notes)
    assert len(ledger.unthawed("vm0")) == 1
    ledger.close()


async def test_cancelled_run_thaws(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=2)
    fleet = await fleet_for(sb)
    ledger = PointsLedger(tmp_path / "l.sqlite")
    agent = await FakeAgent(tmp_path / "qga.sock").start()
    run = asyncio.ensure_future(run_policy(fleet["vm0"], ledger, frozen_policy(sb), timeout=60,
                                           guest_agent=f"unix:{agent.path}"))
    sending = ledger.mark_sending

    def interrupted(*args, **kw):
        # Ctrl-C while frozen, just before the transaction goes out (the next await raises).
        assert agent.frozen
        run.cancel()
        return sending(*args, **kw)

    ledger.mark_sending = interrupted  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await run
    assert agent.log.count("guest-fsfreeze-thaw") == 1 and not agent.frozen
    assert ledger.unthawed("vm0") == []
    await agent.stop()
    ledger.close()
