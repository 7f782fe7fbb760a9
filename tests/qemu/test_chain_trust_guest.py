"""A backup history against a real Linux guest that writes to its disk all the time.

Each run's point in time is fixed while the guest is paused: QMP ``stop`` (QEMU flushes the
disk), a reference copy (``qemu-img convert -U``), the backup transaction is sent, ``cont`` as
soon as its jobs run. The guest writes on while the jobs copy; every chain the ledger calls VALID
must still equal its reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from functools import partial

import pytest

from tests.kit.common import make_policy, requires_qemu, wait_for
from tests.kit.guest import GuestVM, guest_unavailable
from tui.core.chains.chain import chain_state
from tui.core.chains.identity import LOST_WRITES, check_chains
from tui.core.chains.run import run_policy
from tui.core.chains.verify import compare_images, verify_chain
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageState

if os.environ.get("CI") and guest_unavailable():
    raise RuntimeError(f"CI=true but {guest_unavailable()}")

pytestmark = [requires_qemu, pytest.mark.skipif(guest_unavailable() is not None,
                                                reason=str(guest_unavailable()))]


def convert_shared(disk: str, out: str) -> None:
    subprocess.run(["qemu-img", "convert", "-U", "-O", "qcow2", disk, out], check=True,
                   capture_output=True, timeout=120)


def resume_when_jobs_run(sb, resumed: list, text: str) -> None:
    """A run's step callback: once its jobs run (their point in time is fixed), ``cont``."""
    if text == "waiting for the jobs" and not resumed:
        resumed.append(asyncio.get_running_loop().create_task(sb.qmp("cont")))


async def paused_backup(sb, conn, ledger, pol, refs: dict[str, str], n: int):
    """One run at a point in time fixed while the guest is paused (its reference copy goes into
    ``refs`` by image path); the guest resumes as soon as the jobs run. The drive's outcome."""
    await sb.qmp("stop")  # the point in time: QEMU flushes the disk
    ref = str(sb.path(f"ref-{n}.qcow2"))
    await asyncio.to_thread(convert_shared, str(sb.image(0)), ref)
    resumed: list[asyncio.Task[object]] = []
    res = await run_policy(conn, ledger, pol, timeout=120,
                           on_step=partial(resume_when_jobs_run, sb, resumed))
    assert resumed, "the guest was not resumed during the backup"
    await resumed[0]
    assert res.exit_code == 0, res.to_dict()
    refs[res.drives[0].path or ""] = ref
    return res.drives[0]


def assert_valid_chains_equal(ledger, refs: dict[str, str], expected: int) -> list:
    """Every VALID image (``expected`` of them), read with its chain, equals its reference."""
    valid = [i for i in ledger.images() if i.state is ImageState.VALID]
    assert len(valid) == expected
    for im in valid:
        checks = verify_chain(ledger, im, reference=refs[im.path])
        assert all(c.ok for c in checks), checks
    return valid


@contextlib.asynccontextmanager
async def booted_guest(tmp_path, fleet_for):
    """A booted, writing guest, the app's connection to it, a ledger and a policy over its disk:
    ``(vm, sb, conn, ledger, pol)``."""
    vm = GuestVM(tmp_path / "guest")
    sb = await vm.start()
    try:
        await wait_for(vm.ready, timeout=90, what="the guest to boot")
        await wait_for(lambda: vm.records() >= 3, timeout=60, what="the guest's first writes")
        conn = (await fleet_for(sb))["vm0"]
        with Ledger(tmp_path / "ledger.sqlite") as ledger:
            pol = make_policy("nightly", {"connection": "vm0", "drives": ["drive0"],
                                          "target_dir": str(tmp_path)})
            yield vm, sb, conn, ledger, pol
    finally:
        await sb.close()


async def more_writes(vm: GuestVM) -> None:
    await wait_for(partial(lambda base: vm.records() >= base + 3, vm.records()), timeout=60,
                   what="more guest writes")


async def test_history_against_a_writing_guest(tmp_path, fleet_for):
    async with booted_guest(tmp_path, fleet_for) as (vm, sb, conn, ledger, pol):
        refs: dict[str, str] = {}
        kinds = []
        for n in range(4):
            await more_writes(vm)
            kinds.append((await paused_backup(sb, conn, ledger, pol, refs, n)).kind)
        assert kinds == ["full", "incremental", "incremental", "incremental"]
        written = vm.records()
        await wait_for(lambda: vm.records() > written, timeout=30, what="the guest to write on")
        valid = assert_valid_chains_equal(ledger, refs, 4)
        # The references really differ from each other: the guest changed the disk in between.
        assert not compare_images(refs[valid[0].path], refs[valid[-1].path]).ok


async def test_an_outside_clear_under_a_writing_guest_makes_a_full(tmp_path, fleet_for):
    async with booted_guest(tmp_path, fleet_for) as (vm, sb, conn, ledger, pol):
        refs: dict[str, str] = {}
        assert (await paused_backup(sb, conn, ledger, pol, refs, 0)).kind == "full"
        await more_writes(vm)
        bm = chain_state(ledger, "vm0", "drive0").images[0].bitmap
        # Another QMP client clears the chain's bitmap while the guest writes on.
        await sb.qmp("block-dirty-bitmap-clear", {"node": "disk0", "name": bm})
        await more_writes(vm)
        # The check runs beside the running guest (it never pauses it).
        await check_chains(conn, ledger, pol)
        assert (await sb.qmp("query-status"))["running"] is True
        assert [b.reason for b in ledger.breaks("vm0")] == [LOST_WRITES]
        d = await paused_backup(sb, conn, ledger, pol, refs, 1)
        assert d.kind == "full" and LOST_WRITES in d.reason
        await more_writes(vm)
        assert (await paused_backup(sb, conn, ledger, pol, refs, 2)).kind == "incremental"
        assert_valid_chains_equal(ledger, refs, 3)
