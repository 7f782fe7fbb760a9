"""Chain trust against a real QEMU: the five ways a VALID image used to be wrong (or a valid image
deleted), each ending with every VALID chain compared to a reference copy of the disk.

The sandbox VM is stopped (``-S``): the disk changes only by the test's writes, so a reference
copy taken right after a run is the disk at that run's point in time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest
import yaml

from tests.kit.chains import reference
from tests.kit.common import make_policy, requires_qemu, wait_for
from tests.kit.dashboard import outcome, outcomes_seen, running
from tui.core.chains.chain import chain_state
from tui.core.chains.owners import break_warning, chain_of
from tui.core.chains.reconcile import reconcile
from tui.core.chains.run import run_policy
from tui.core.chains.verify import verify_chain
from tui.core.chains.watch import watch_connection
from tui.core.ledger.names import companion_bitmaps, with_companions
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageState, JobState, TxnState
from tui.core.txn.targets import create_target
from tui.ui.screens.bitmap_dialogs import MergeDialog
from tui.ui.screens.dialogs import ConfirmDialog

pytestmark = requires_qemu


def policy(sb, name="nightly", drives=("drive0", "drive1"), **kw):
    return make_policy(name, {"connection": "vm0", "drives": list(drives),
                                   "target_dir": str(sb.dir), **kw})


class Refs:
    """Reference copies of the disks, one per VALID image, taken at that image's point."""

    def __init__(self, sb):
        self.sb = sb
        self.by_image: dict[str, str] = {}

    async def take(self, result):
        """After a run (the VM is stopped: nothing wrote since the jobs' start). ``result``: a
        RunResult or a dict drive → outcome."""
        drives = result.values() if isinstance(result, dict) else result.drives
        for d in drives:
            if d.path and d.state is ImageState.VALID:
                i = int(d.node[-1])
                self.by_image[d.path] = await reference(self.sb, i, f"ref-{len(self.by_image)}.qcow2")

    def assert_every_valid_chain_equal(self, *ledgers):
        """Every image any ledger calls VALID still exists and equals the disk at its point."""
        checked = 0
        for led in ledgers:
            for im in led.images():
                if im.state is not ImageState.VALID:
                    continue
                assert os.path.exists(im.path), f"VALID image {im.path} was deleted"
                assert im.path in self.by_image, f"no reference for VALID {im.path}"
                checks = verify_chain(led, im, reference=self.by_image[im.path])
                assert all(c.ok for c in checks), checks
                checked += 1
        assert checked


async def policy_setup(make_sandbox, fleet_for, tmp_path, drives, **policy_kw):
    """A QEMU with ``drives`` drives, its connection, a fresh ledger, a policy over every drive
    and the reference copies: ``(sb, conn, ledger, pol, refs)``."""
    sb = await make_sandbox(drives=drives)
    conn = (await fleet_for(sb))["vm0"]
    pol = policy(sb, drives=tuple(f"drive{i}" for i in range(drives)), **policy_kw)
    return sb, conn, Ledger(tmp_path / "l.sqlite"), pol, Refs(sb)


def by_drive(result):
    return {d.drive: d for d in result.drives}


# ---------------------------------------------------------------- 1. resets outside the ledger


@pytest.mark.parametrize("action,key", [("clear", "x"), ("remove", "r"), ("disable", "d"),
                                        ("merge", "m")])
async def test_console_action_on_a_policy_bitmap_warns_and_records_a_break(
        make_sandbox, fleet_for, tmp_path, action, key):
    sb = await make_sandbox(drives=2)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = Ledger(tmp_path / "ledger.sqlite")  # the ledger the console is given
    pol = policy(sb)
    refs = Refs(sb)
    await sb.write(0, 0, "1M", 0x11)
    await refs.take(await run_policy(conn, ledger, pol, timeout=60))
    await sb.write(0, "2M", "1M", 0x12)
    await refs.take(await run_policy(conn, ledger, pol, timeout=60))
    name = chain_state(ledger, "vm0", "drive0").base.bitmap
    await sb.write(0, "4M", "1M", 0x13)
    await sb.add_bitmap(1, "other")
    await sb.write(1, "8M", "1M", 0x15)
    await conn.refresh()

    async with running(fleet, size=(120, 30), ledger=ledger.path) as (app, pilot, dash):
        assert dash.select_bitmap("vm0", "disk0", name)
        n = outcomes_seen(dash)
        await pilot.press(key)
        if action == "merge":  # pick a source first
            dialog = app.screen
            assert isinstance(dialog, MergeDialog)
            dialog.query_one("#sources").select("disk1/other")
            dialog.query_one("#ok").press()
            await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        assert "policy nightly's chain for drive0 will need a new full backup" in app.screen.question
        await pilot.press("y")
        out = await outcome(pilot, dash, n)
        assert out.ok, out.message
    [brk] = ledger.breaks("vm0", "disk0", name)
    assert "in the console" in brk.reason
    await sb.write(0, "6M", "1M", 0x14)
    await conn.refresh()
    res = by_drive(await run_policy(conn, ledger, pol, timeout=60))
    assert res["drive0"].kind == "full" and "chain broken" in res["drive0"].reason
    assert res["drive1"].kind == "incremental"
    await refs.take(res)
    refs.assert_every_valid_chain_equal(ledger)
    ledger.close()


async def test_qmp_clear_seen_by_the_console_watcher_breaks_the_chain(make_sandbox, fleet_for, tmp_path):
    sb, conn, ledger, pol, refs = await policy_setup(make_sandbox, fleet_for, tmp_path, 1)
    await refs.take(await run_policy(conn, ledger, pol, timeout=60))
    name = chain_state(ledger, "vm0", "drive0").base.bitmap
    stop = watch_connection(ledger, conn)
    try:
        await sb.write(0, 0, "2M", 0x21)
        await conn.refresh()
        assert not ledger.breaks("vm0", "disk0", name)
        await sb.qmp("block-dirty-bitmap-clear", {"node": "disk0", "name": name})  # not through us
        await conn.refresh()  # the console's next refresh sees the count drop
        await wait_for(lambda: bool(ledger.breaks("vm0", "disk0", name)), what="a recorded break")
        await sb.write(0, "8M", "4M", 0x22)  # more writes than before the clear
    finally:
        stop()
    assert "count dropped" in ledger.breaks("vm0", "disk0", name)[0].reason
    res = await run_policy(conn, ledger, pol, timeout=60)
    assert res.drives[0].kind == "full" and "count dropped" in res.drives[0].reason
    await refs.take(res)
    refs.assert_every_valid_chain_equal(ledger)
    ledger.close()


async def test_recreated_bitmap_is_detected_at_plan_time(make_sandbox, fleet_for, tmp_path):
    """Removed and added again with other settings (granularity, persistence), between runs."""
    sb, conn, ledger, pol, refs = await policy_setup(make_sandbox, fleet_for, tmp_path, 2)
    await refs.take(await run_policy(conn, ledger, pol, timeout=60))
    names = {d: chain_state(ledger, "vm0", d).base.bitmap for d in ("drive0", "drive1")}
    await sb.write(0, 0, "1M", 0x31)
    await sb.write(1, 0, "1M", 0x32)
    await sb.qmp("block-dirty-bitmap-remove", {"node": "disk0", "name": names["drive0"]})
    await sb.qmp("block-dirty-bitmap-add", {"node": "disk0", "name": names["drive0"],
                                            "granularity": 4096})
    await sb.qmp("block-dirty-bitmap-remove", {"node": "disk1", "name": names["drive1"]})
    await sb.qmp("block-dirty-bitmap-add", {"node": "disk1", "name": names["drive1"],
                                            "persistent": True})
    await sb.write(0, "3M", "1M", 0x33)
    await sb.write(1, "3M", "1M", 0x34)
    await conn.refresh()
    res = by_drive(await run_policy(conn, ledger, pol, timeout=60))
    assert res["drive0"].kind == "full" and "changed granularity" in res["drive0"].reason
    assert res["drive1"].kind == "full" and "changed persistence" in res["drive1"].reason
    assert {b.reason.split(" changed ")[1].split(" ")[0] for d, n in names.items()
            for b in ledger.breaks("vm0", f"disk{d[-1]}", n)} == {"granularity", "persistence"}
    await refs.take(res)
    refs.assert_every_valid_chain_equal(ledger)
    ledger.close()


async def test_unwatched_clear_is_caught_by_verify_after(make_sandbox, fleet_for, tmp_path):
    """A clear of the chain's bitmap *and* its sentinel, followed by more writes while nothing of
    ours watched, cannot be seen from QMP (the identity check needs one of them intact);
    ``verify: after`` compares the new chain with the disk and refuses to call it VALID."""
    sb, conn, ledger, pol, refs = await policy_setup(make_sandbox, fleet_for, tmp_path, 1, verify="after")
    first = await run_policy(conn, ledger, pol, timeout=60)
    assert any("verified" in n for n in first.notes), first.notes
    await refs.take(first)
    name = chain_state(ledger, "vm0", "drive0").base.bitmap
    await sb.write(0, 0, "1M", 0x41)
    for cleared in (name, companion_bitmaps(name)[0]):
        await sb.qmp("block-dirty-bitmap-clear", {"node": "disk0", "name": cleared})
    await sb.write(0, "8M", "2M", 0x42)
    await conn.refresh()
    res = await run_policy(conn, ledger, pol, timeout=60)
    assert res.drives[0].kind == "incremental"  # nothing could tell...
    assert res.drives[0].state is ImageState.INVALID  # ...but the comparison did
    assert "verify after" in (res.drives[0].error or "") and res.exit_code == 1
    again = await run_policy(conn, ledger, pol, timeout=60)
    assert again.drives[0].kind == "full" and "verify after" in again.drives[0].reason
    assert again.drives[0].state is ImageState.VALID
    await refs.take(again)
    refs.assert_every_valid_chain_equal(ledger)
    ledger.close()


async def test_full_every_bounds_the_chain(make_sandbox, fleet_for, tmp_path):
    sb, conn, ledger, pol, refs = await policy_setup(make_sandbox, fleet_for, tmp_path, 1, full_every=2)
    runs = []
    for i in range(4):
        await sb.write(0, f"{i}M", "64k", 0x50 + i)
        res = await run_policy(conn, ledger, pol, timeout=60)
        runs.append(res.drives[0])
        await refs.take(res)
    assert [d.kind for d in runs] == ["full", "incremental", "full", "incremental"]
    assert "full_every 2: the chain has 2 images" in runs[2].reason
    refs.assert_every_valid_chain_equal(ledger)
    ledger.close()


# ---------------------------------------------------------------- 2. other tools' bitmaps


async def test_other_tools_bitmaps_are_never_touched(make_sandbox, fleet_for, tmp_path):
    from tui.core.chains.view import build_view

    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = Ledger(tmp_path / "l.sqlite")
    foreign = ["pbs-incremental-dirty-bitmap", "virtnbdbackup.0", "1700000000", "stray",
               "bt.0badc0de.nightly.c1"]
    for n in foreign:
        await sb.add_bitmap(0, n)
    pol = policy(sb, drives=("drive0",), bitmap="pbs-incremental-dirty-bitmap")
    refs = Refs(sb)
    for i in range(3):
        await sb.write(0, f"{2 * i}M", "1M", 0x60 + i)
        await refs.take(await run_policy(conn, ledger, pol, timeout=60))
    await conn.refresh()
    names = {b.name for b in conn.model.nodes["disk0"].named_bitmaps}
    ours = with_companions({chain_state(ledger, "vm0", "drive0").base.bitmap})
    assert names == set(foreign) | ours
    view = build_view(ledger, fleet.store.state)
    assert view.problems == []
    assert {b.name: b.ours for b in view.bitmaps} == {**dict.fromkeys(foreign, False),
                                                       **dict.fromkeys(ours, True)}
    # The console does not call another tool's bitmap a policy's chain.
    assert break_warning("vm0", "disk0", "pbs-incremental-dirty-bitmap", "remove", ledger) is None
    assert chain_of(ledger, "vm0", "disk0", "virtnbdbackup.0") is None
    refs.assert_every_valid_chain_equal(ledger)
    ledger.close()


# ---------------------------------------------------------------- 3. killed before release

KILL_BEFORE_RELEASE = """
import os, signal, sys
import tui.core.chains.reconcile as reconcile

async def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the outcome is recorded; the target is still attached

reconcile.release_target = die
from tui.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def config_for(sb, tmp_path, **extra):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"connections": {"vm0": sb.address}, "policies": {
        "nightly": {"connection": "vm0", "drives": ["drive0"], "target_dir": str(sb.dir), **extra}}}))
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"),
           "XDG_CONFIG_HOME": str(tmp_path / "nocfg")}
    return cfg, env


def ledger_at(env) -> Ledger:
    return Ledger(os.path.join(env["XDG_STATE_HOME"], "bitmap-tui", "ledger.sqlite"))


def killed_backup(cfg, env):
    return subprocess.run([sys.executable, "-c", KILL_BEFORE_RELEASE, "backup", "nightly",
                           "--config", str(cfg)], env=env, capture_output=True, text=True, timeout=120)


async def node_names(sb):
    return {n["node-name"] for n in await sb.qmp("query-named-block-nodes")}


async def test_sigkill_between_outcome_and_release_is_finished_by_reconcile(
        make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    cfg, env = config_for(sb, tmp_path)
    refs = Refs(sb)
    await sb.write(0, 0, "4M", 0x71)
    res = await asyncio.to_thread(killed_backup, cfg, env)
    assert res.returncode == -signal.SIGKILL, res.stderr
    led = ledger_at(env)
    [im] = led.images()
    [job] = led.jobs(im.txn_id)
    assert job.state is JobState.COMPLETED and im.state is ImageState.PENDING
    assert im.released is None and im.target_node in await node_names(sb)  # still attached
    refs.by_image[im.path] = await reference(sb, 0, "ref-killed.qcow2")  # nothing wrote since
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    await reconcile(conn, led)
    im = led.image(im.id)
    assert im.state is ImageState.VALID and im.released is not None
    assert im.target_node not in await node_names(sb)
    assert led.txn(im.txn_id).state is TxnState.DONE
    # The next incremental builds on it, and both equal the disk at their points.
    await sb.write(0, "8M", "1M", 0x72)
    pol = make_policy("nightly", {"connection": "vm0", "drives": ["drive0"],
                                       "target_dir": str(sb.dir)})
    nxt = await run_policy(conn, led, pol, timeout=60)
    assert nxt.drives[0].kind == "incremental" and nxt.drives[0].base == im.path
    await refs.take(nxt)
    refs.assert_every_valid_chain_equal(led)
    led.close()


async def test_sigkill_before_release_then_qemu_crash_is_never_valid(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    cfg, env = config_for(sb, tmp_path)
    await sb.write(0, 0, "8M", 0x73)
    res = await asyncio.to_thread(killed_backup, cfg, env)
    assert res.returncode == -signal.SIGKILL, res.stderr
    sb.kill()  # QEMU dies too: the target was never flushed or closed
    await sb.start()
    led = ledger_at(env)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    await reconcile(conn, led)
    [im] = led.images()
    assert im.state is ImageState.UNKNOWN and "not released by us" in (im.error or "")
    pol = make_policy("nightly", {"connection": "vm0", "drives": ["drive0"],
                                       "target_dir": str(sb.dir)})
    refs = Refs(sb)
    nxt = await run_policy(conn, led, pol, timeout=60)
    assert nxt.drives[0].kind == "full" and nxt.drives[0].state is ImageState.VALID
    await refs.take(nxt)
    refs.assert_every_valid_chain_equal(led)
    led.close()


# ---------------------------------------------------------------- 4. path aliases


async def test_symlinked_target_dirs_never_delete_a_valid_image(make_sandbox, fleet_for, tmp_path):
    from tui.core.chains.cleanup import delete_images
    from tui.core.chains.view import build_view

    a = await make_sandbox(drives=2)
    b = await make_sandbox(drives=1)
    fleet = await fleet_for(a, b)
    ledger = Ledger(tmp_path / "l.sqlite")
    real = tmp_path / "backups"
    real.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(real)
    pol_a = make_policy("a", {"connection": "vm0", "drives": ["drive0", "drive1"],
                                   "target_dir": str(real)})
    pol_b = make_policy("b", {"connection": "vm1", "drives": ["drive0"],
                                   "target_dir": str(alias)})
    (real / "drive1-full-1.qcow2").write_bytes(b"in the way")  # vm0's run is refused...
    refused = await run_policy(fleet["vm0"], ledger, pol_a, timeout=60)
    assert refused.exit_code == 2
    [invalid] = [i for i in ledger.images(connection="vm0") if i.drive == "drive0"]
    assert invalid.state is ImageState.INVALID  # ...its drive0 record names a file never made
    await b.write(0, 0, "1M", 0x81)
    made = await run_policy(fleet["vm1"], ledger, pol_b, timeout=60)
    [valid] = ledger.images(connection="vm1")
    assert made.exit_code == 0 and valid.state is ImageState.VALID
    assert await asyncio.to_thread(os.path.samefile, valid.path, invalid.path)  # one file, 2 names
    view = build_view(ledger, fleet.store.state)
    assert not [p for p in view.problems if p.kind == "invalid-images"]
    res = delete_images(ledger, "vm0", [invalid.id])
    assert not res.ok and await asyncio.to_thread(os.path.exists, valid.path)
    refs = Refs(b)
    await refs.take(made)
    refs.assert_every_valid_chain_equal(ledger)
    ledger.close()


# ---------------------------------------------------------------- 5. two ledgers, one QEMU


async def test_a_second_ledger_never_takes_another_ledgers_job_for_its_own(
        make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    first = Ledger(tmp_path / "a.sqlite")
    second = Ledger(tmp_path / "b.sqlite")
    assert first.ledger_id != second.ledger_id
    await sb.write(0, 0, "2M", 0x91)
    # Ledger A sends a full and dies before recording it: its job stays concluded in QEMU.
    txn = first.new_txn("vm0", "p", "individual")
    path = str(sb.path("a-full.qcow2"))
    image = first.add_image(txn_id=txn, connection="vm0", policy="p", drive="drive0", node="disk0",
                            bitmap=first.chain_bitmap("p", txn), path=path, kind="full",
                            parent_id=None, job_id=first.job_id(txn, 0), source_file=None,
                            source_size=64 << 20)
    node = first.node_name(txn, 0)
    first.set_image_nodes(image, f"{node}-f", node)
    await create_target(conn, path, 64 << 20, node=node)
    first.mark_sending(txn, [image])
    await conn.execute("blockdev-backup", {"job-id": first.job_id(txn, 0), "device": "disk0",
                                           "target": node, "sync": "full", "auto-dismiss": False})
    first.mark_sent(txn)
    first.release([txn])
    await wait_for(lambda: any(j.status == "concluded" for j in conn.model.jobs.values()),
                   timeout=30, what="A's job concluded")
    refs = Refs(sb)
    refs.by_image[path] = await reference(sb, 0, "ref-a.qcow2")  # nothing wrote since its start
    # Ledger B has a never-sent image under the same transaction number (the old ids were
    # "bt1-0" in both), and one pending job under A's exact id (as an older release named it).
    btxn = second.new_txn("vm0", "p", "individual")
    assert btxn == txn
    mine = second.add_image(txn_id=btxn, connection="vm0", policy="p", drive="drive0", node="disk0",
                            bitmap=second.chain_bitmap("p", btxn), path=str(sb.path("b-full.qcow2")),
                            kind="full", parent_id=None, job_id=second.job_id(btxn, 0),
                            source_file=None, source_size=64 << 20)
    alias = second.add_image(txn_id=btxn, connection="vm0", policy="p", drive="drive1", node="disk0",
                             bitmap="x", path=str(sb.path("b-other.qcow2")), kind="full",
                             parent_id=None, job_id=first.job_id(txn, 0), source_file=None,
                             source_size=64 << 20)
    second.mark_sending(btxn, [mine, alias])
    second.release([btxn])
    await reconcile(conn, second)
    assert second.image(mine).state is ImageState.UNKNOWN
    assert second.image(alias).state is ImageState.UNKNOWN
    assert "not issued by this ledger" in (second.image(alias).error or "")
    # A's job is still there for A (B did not dismiss it), and A resolves it as its own.
    assert first.job_id(txn, 0) in {j["id"] for j in await conn.execute("query-jobs")}
    await reconcile(conn, first)
    assert first.image(image).state is ImageState.VALID
    # B's next run is a full of its own; every VALID chain of either ledger equals its reference.
    await sb.write(0, "4M", "1M", 0x92)
    pol = make_policy("p", {"connection": "vm0", "drives": ["drive0"], "target_dir": str(sb.dir),
                                 "pattern": "b-{kind}-{n}.qcow2"})
    res = await run_policy(conn, second, pol, timeout=60)
    assert res.drives[0].kind == "full" and res.drives[0].state is ImageState.VALID
    await refs.take(res)
    refs.assert_every_valid_chain_equal(first, second)
    first.close()
    second.close()
