"""freeze: true with the real qemu-ga in a real Linux guest writing to an ext4 /data throughout."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from tests.kit.common import make_policy, wait_for
from tests.kit.guest_agent import AgentGuest, guest_missing
from tui.core.base.errors import AgentError
from tui.core.chains.points import list_points
from tui.core.chains.restore import restore_local
from tui.core.chains.run import run_policy
from tui.core.ledger.points_repository import PointsLedger
from tui.core.ledger.rows import ImageState
from tui.core.qmp.agent import GuestAgent

if os.environ.get("CI") and guest_missing():
    raise RuntimeError(f"CI=true but the agent guest cannot run: {guest_missing()}")

pytestmark = [pytest.mark.qemu,
              pytest.mark.skipif(guest_missing() is not None, reason=str(guest_missing()))]


async def agent_up(address: str, timeout: float = 60) -> None:
    """The first syncs time out while qemu-ga starts: retry."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        try:
            async with GuestAgent(address, timeout=2) as ga:
                await ga.sync()
                return
        except AgentError:
            if loop.time() > end:
                raise
            await asyncio.sleep(0.5)


def fsck(image: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["e2fsck", "-fn", image], capture_output=True, text=True, check=False)


@pytest.mark.timeout(600)
async def test_real_agent_freezes_writes_and_frozen_points_restore_clean(fleet_for, tmp_path):
    guest = await AgentGuest(tmp_path / "guest").start()
    try:
        await agent_up(guest.agent)
        # Freezing really stops the guest's /data writes; thawing lets them go on.
        async with GuestAgent(guest.agent) as ga:
            assert await ga.status() == "thawed"
            assert await ga.freeze(30) == 1
            assert await ga.status() == "frozen"
            before = guest.writes()
            await asyncio.sleep(2)
            assert guest.writes() - before <= 1  # one write may have been on its way
            assert await ga.thaw() == 1
        going = guest.writes()
        await wait_for(lambda: guest.writes() >= going + 2, timeout=30, what="writes after thaw")

        fleet = await fleet_for(guest.address)
        ledger = PointsLedger(tmp_path / "l.sqlite")
        pol = make_policy("p", {"connection": "vm0", "drives": ["drive0"], "bitmap": "bm",
                                     "target_dir": str(tmp_path), "freeze": True})
        for _ in range(3):  # a full and two incrementals while the guest writes
            res = await run_policy(fleet["vm0"], ledger, pol, timeout=120,
                                   guest_agent=guest.agent)
            assert res.drives[0].state is ImageState.VALID, res
            assert not res.notes, res.notes
            n = guest.writes()
            await wait_for(lambda n=n: guest.writes() >= n + 3, timeout=30, what="guest writes")
        async with GuestAgent(guest.agent) as ga:
            assert await ga.status() == "thawed"
        points = list_points(ledger)
        assert [p.frozen for p in points] == [True, True, True]
        assert ledger.unthawed("vm0") == []
        # Each frozen point restores to a clean file system: fsck finds nothing to fix and the
        # journal needs no recovery (the freeze flushed it).
        for p in points:
            out = str(tmp_path / f"p{p.point}.raw")
            restore_local(ledger, p, out, "raw")
            check = await asyncio.to_thread(fsck, out)
            assert check.returncode == 0, check.stdout + check.stderr
            assert "journal recovery" not in check.stdout + check.stderr  # a clean journal
        # The contrast: the same backup without freeze is only crash-consistent (a mounted ext4
        # has its journal marked as needing recovery), and fsck says so.
        plain = make_policy("q", {"connection": "vm0", "drives": ["drive0"], "bitmap": "bm2",
                                       "target_dir": str(tmp_path), "pattern": "q-{n}.qcow2"})
        res = await run_policy(fleet["vm0"], ledger, plain, timeout=120, guest_agent=guest.agent)
        [q] = [p for p in list_points(ledger, policy="q")]
        assert q.frozen is None
        out = str(tmp_path / "unfrozen.raw")
        restore_local(ledger, q, out, "raw")
        check = await asyncio.to_thread(fsck, out)
        assert "skipping journal recovery" in check.stdout + check.stderr, check.stdout
        ledger.close()
    finally:
        await guest.close()


@pytest.mark.timeout(600)
async def test_history_with_a_real_guest_writing_restores_equal(fleet_for, tmp_path):
    """Points taken while a real guest writes: each restores equal to a copy of the disk taken
    at its point (the VM is stopped for the copy and the transaction, then continues)."""
    from tests.kit.chains import same
    from tui.core.chains.restore import restore_qemu

    guest = await AgentGuest(tmp_path / "guest").start()
    try:
        fleet = await fleet_for(guest.address)
        conn = fleet["vm0"]
        ledger = PointsLedger(tmp_path / "l.sqlite")
        pol = make_policy("p", {"connection": "vm0", "drives": ["drive0"], "bitmap": "bm",
                                     "target_dir": str(tmp_path)})
        refs = {}
        for n in range(1, 4):
            done = guest.writes()
            await wait_for(lambda d=done: guest.writes() >= d + 3, timeout=60, what="writes")
            await guest.qmp("stop")
            ref = str(tmp_path / f"ref{n}.qcow2")
            await asyncio.to_thread(subprocess.run, ["qemu-img", "convert", "-U", "-f", "qcow2",
                                                     "-O", "qcow2", str(guest.disk), ref],
                                    check=True)
            res = await run_policy(conn, ledger, pol, timeout=120)
            await guest.qmp("cont")
            assert res.drives[0].state is ImageState.VALID, res
            refs[res.drives[0].path] = ref
        points = list_points(ledger)
        assert [p.kind for p in points] == ["full", "incremental", "incremental"]
        assert same(refs[points[0].image], refs[points[2].image]).returncode == 1  # it wrote
        for p in points:
            ref = refs[ledger.image(p.image_id).path]
            local = str(tmp_path / f"l{p.point}.qcow2")
            restore_local(ledger, p, local, "qcow2")
            assert same(local, ref).returncode == 0
            via = str(tmp_path / f"q{p.point}.qcow2")
            await restore_qemu(conn, ledger, p, via, "qcow2", local_files=True)
            assert same(via, ref).returncode == 0
        ledger.close()
    finally:
        await guest.close()
