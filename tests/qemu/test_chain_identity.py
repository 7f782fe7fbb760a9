"""Chain identity against a real QEMU: a chain's bitmap changed behind the app's back, and a
resized disk, make the next run a full one with the reason.

The sandbox VM is stopped (``-S``): the disk changes only by the test's writes (HMP ``qemu-io``),
so a reference copy taken right after a run is the disk at that run's point in time. Every
image the ledger calls VALID is compared (``qemu-img compare``) with its reference.
"""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from tests.kit.chains import reference
from tests.kit.common import make_policy, requires_qemu, wait_for
from tui.core.base.programs import QEMU_IMG
from tui.core.chains.chain import chain_state
from tui.core.chains.identity import LOST_WRITES, RESIZED
from tui.core.chains.run import run_policy
from tui.core.chains.verify import verify_chain
from tui.core.ledger.names import companion_bitmaps
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageState

pytestmark = requires_qemu
MiB = 1 << 20


class History:
    """One drive's backups, each with a reference copy of the disk at its point."""

    def __init__(self, sb, conn, ledger, pol):
        self.sb, self.conn, self.ledger, self.pol = sb, conn, ledger, pol
        self.refs: dict[str, str] = {}

    async def run(self):
        res = await run_policy(self.conn, self.ledger, self.pol, timeout=60)
        d = res.drives[0]
        assert d.state is ImageState.VALID, res.to_dict()
        self.refs[d.path or ""] = await reference(self.sb, 0, f"ref-{len(self.refs)}.qcow2")
        return d

    def assert_every_valid_chain_is_the_disk(self):
        valid = [im for im in self.ledger.images() if im.state is ImageState.VALID]
        assert valid
        for im in valid:
            checks = verify_chain(self.ledger, im, reference=self.refs[im.path])
            assert all(c.ok for c in checks), checks

    def chain_bitmap(self) -> str:
        return chain_state(self.ledger, "vm0", "drive0").images[0].bitmap


async def started(make_sandbox, fleet_for, tmp_path, **policy_kw) -> History:
    sb = await make_sandbox(drives=1)
    conn = (await fleet_for(sb))["vm0"]
    pol = make_policy("nightly", {"connection": "vm0", "drives": ["drive0"],
                                  "target_dir": str(sb.dir), **policy_kw})
    h = History(sb, conn, Ledger(tmp_path / "l.sqlite"), pol)
    await sb.write(0, 0, "4M", 0x11)
    await sb.write(0, "48M", "4M", 0x12)  # data in the disk's tail (what a shrink clears)
    assert (await h.run()).kind == "full"
    return h


async def test_outside_clear_then_as_many_writes_makes_a_full(make_sandbox, fleet_for, tmp_path):
    h = await started(make_sandbox, fleet_for, tmp_path)
    sb = h.sb
    await sb.write(0, "8M", "1M", 0x21)
    bm = h.chain_bitmap()
    # Another QMP client (the sandbox's control monitor) clears the chain's bitmap, and the
    # guest writes as much again: the count looks like plain growth.
    await sb.qmp("block-dirty-bitmap-clear", {"node": "disk0", "name": bm})
    await sb.write(0, "16M", "1M", 0x22)
    await h.conn.refresh()
    assert h.conn.model.nodes["disk0"].bitmap(bm).count == MiB
    d = await h.run()
    assert d.kind == "full" and LOST_WRITES in d.reason
    await sb.write(0, "20M", "1M", 0x23)
    assert (await h.run()).kind == "incremental"  # the new chain checks out
    h.assert_every_valid_chain_is_the_disk()


async def test_remove_and_readd_with_the_same_settings_makes_a_full(make_sandbox, fleet_for,
                                                                   tmp_path):
    h = await started(make_sandbox, fleet_for, tmp_path, granularity=65536)
    sb = h.sb
    await sb.write(0, "8M", "2M", 0x31)
    bm = h.chain_bitmap()
    await sb.qmp("block-dirty-bitmap-remove", {"node": "disk0", "name": bm})
    await sb.qmp("block-dirty-bitmap-add", {"node": "disk0", "name": bm, "granularity": 65536})
    await sb.write(0, "16M", "3M", 0x32)
    d = await h.run()
    assert d.kind == "full" and LOST_WRITES in d.reason
    h.assert_every_valid_chain_is_the_disk()


async def test_offline_clear_of_a_persistent_chain_makes_a_full(make_sandbox, fleet_for, tmp_path):
    h = await started(make_sandbox, fleet_for, tmp_path, persistent=True)
    sb, conn = h.sb, h.conn
    await sb.write(0, "8M", "1M", 0x41)
    bm = h.chain_bitmap()
    tries = conn.attempts
    await sb.stop()  # a clean quit stores the persistent bitmaps
    await asyncio.to_thread(subprocess.run, [QEMU_IMG, "bitmap", "--clear", str(sb.image(0)), bm],
                            check=True, capture_output=True, timeout=60)
    await sb.start()
    await wait_for(lambda: conn.attempts > tries and conn.model.state.value == "connected"
                   and conn.model.synced, timeout=30, what="reconnect")
    await sb.write(0, "16M", "2M", 0x42)  # more than the bitmap held before the clear
    d = await h.run()
    assert d.kind == "full" and LOST_WRITES in d.reason
    h.assert_every_valid_chain_is_the_disk()


async def test_untouched_chains_stay_incremental_across_a_restart(make_sandbox, fleet_for,
                                                                  tmp_path):
    h = await started(make_sandbox, fleet_for, tmp_path, persistent=True)
    sb, conn = h.sb, h.conn
    for n in range(2):
        await sb.write(0, f"{8 + 4 * n}M", "1M", 0x51 + n)
        assert (await h.run()).kind == "incremental"
    tries = conn.attempts
    await sb.restart()
    await wait_for(lambda: conn.attempts > tries and conn.model.state.value == "connected"
                   and conn.model.synced, timeout=30, what="reconnect")
    await sb.write(0, "30M", "1M", 0x55)
    assert (await h.run()).kind == "incremental"
    # The companions are ours, persistent like the chain, never offered as leftovers.
    names = {b.name: b for b in conn.model.nodes["disk0"].named_bitmaps}
    assert all(names[c].persistent for c in companion_bitmaps(h.chain_bitmap()))
    h.assert_every_valid_chain_is_the_disk()


@pytest.mark.parametrize("grow_back", [True, False], ids=["shrink-grow", "grow"])
async def test_a_resize_makes_a_full(make_sandbox, fleet_for, tmp_path, grow_back):
    h = await started(make_sandbox, fleet_for, tmp_path)
    sb = h.sb
    if grow_back:  # shrink past the tail's data, grow back to the same size
        await sb.qmp("block_resize", {"node-name": "disk0", "size": 32 * MiB})
        await sb.qmp("block_resize", {"node-name": "disk0", "size": 64 * MiB})
    else:
        await sb.qmp("block_resize", {"node-name": "disk0", "size": 96 * MiB})
    await sb.write(0, 0, "1M", 0x61)
    d = await h.run()
    assert d.kind == "full"
    assert RESIZED in d.reason
    await sb.write(0, "2M", "1M", 0x62)
    assert (await h.run()).kind == "incremental"
    h.assert_every_valid_chain_is_the_disk()


async def test_a_resize_while_the_job_runs_is_refused_by_qemu(make_sandbox, fleet_for, tmp_path):
    h = await started(make_sandbox, fleet_for, tmp_path, speed=4 * MiB)
    sb = h.sb
    await sb.write(0, "4M", "16M", 0x71)
    refused: list[str] = []

    async def resize() -> None:
        try:
            await sb.qmp("block_resize", {"node-name": "disk0", "size": 32 * MiB})
        except Exception as exc:  # noqa: BLE001 - QEMU's refusal is what is tested
            refused.append(str(exc))

    tasks: list[asyncio.Task[None]] = []

    def step(text: str) -> None:
        if text == "waiting for the jobs" and not tasks:
            tasks.append(asyncio.get_running_loop().create_task(resize()))

    res = await run_policy(h.conn, h.ledger, h.pol, timeout=60, on_step=step)
    await tasks[0]
    # The backup's filter holds the resize permission while the job exists.
    assert refused and "resize" in refused[0]
    d = res.drives[0]
    assert d.kind == "incremental" and d.state is ImageState.VALID
    h.refs[d.path or ""] = await reference(sb, 0, "ref-job.qcow2")
    h.assert_every_valid_chain_is_the_disk()


async def test_a_clear_between_the_check_and_the_backup_makes_it_invalid(make_sandbox, fleet_for,
                                                                        tmp_path):
    h = await started(make_sandbox, fleet_for, tmp_path)
    sb = h.sb
    await sb.write(0, "8M", "1M", 0x81)
    bm = h.chain_bitmap()
    outsider: list[asyncio.Task[None]] = []

    async def clear_and_write() -> None:
        await sb.qmp("block-dirty-bitmap-clear", {"node": "disk0", "name": bm})
        await sb.write(0, "16M", "1M", 0x82)

    def step(text: str) -> None:
        # After the run's check, while it creates its target: before its transaction.
        if text.startswith("creating") and not outsider:
            outsider.append(asyncio.get_running_loop().create_task(clear_and_write()))

    res = await run_policy(h.conn, h.ledger, h.pol, timeout=60, on_step=step)
    await outsider[0]
    d = res.drives[0]
    assert d.kind == "incremental" and d.state is ImageState.INVALID
    assert LOST_WRITES in (next(i for i in h.ledger.images() if i.path == d.path).error or "")
    nxt = await h.run()
    assert nxt.kind == "full" and LOST_WRITES in nxt.reason
    h.assert_every_valid_chain_is_the_disk()


async def test_grouped_chains_clear_their_sentinels_after_success(make_sandbox, fleet_for,
                                                                  tmp_path):
    """Grouped transactions cannot hold bitmap actions: the sentinel is cleared after the group
    succeeded, and the chain keeps checking out run after run."""
    sb = await make_sandbox(drives=2)
    conn = (await fleet_for(sb))["vm0"]
    ledger = Ledger(tmp_path / "l.sqlite")
    pol = make_policy("nightly", {"connection": "vm0", "drives": ["drive0", "drive1"],
                                  "target_dir": str(sb.dir), "completion_mode": "grouped"})
    kinds = []
    for n in range(3):
        await sb.write(0, f"{4 * n}M", "1M", 0x91 + n)
        await sb.write(1, f"{4 * n + 1}M", "1M", 0xa1 + n)
        res = await run_policy(conn, ledger, pol, timeout=60)
        assert res.exit_code == 0, res.to_dict()
        kinds.append({d.kind for d in res.drives})
    assert kinds == [{"full"}, {"incremental"}, {"incremental"}]
    assert ledger.breaks("vm0") == []
    await conn.refresh()
    for i in (0, 1):
        chain = chain_state(ledger, "vm0", f"drive{i}").images[0].bitmap
        sentinel = conn.model.nodes[f"disk{i}"].bitmap(companion_bitmaps(chain)[0])
        assert sentinel is not None and sentinel.count == 0  # cleared with the last backup
