"""Backup chains against a real QEMU: multi-round histories, failures, restarts, verification."""

from __future__ import annotations

import asyncio
import os

from tests.kit.chains import damage, reference
from tests.kit.common import make_policy, requires_qemu, wait_for
from tui.core.chains.plan import chain_state, make_plan
from tui.core.chains.run import run_policy
from tui.core.chains.verify import chain_paths, check_image, compare_images, verify_chain
from tui.core.ledger.names import with_companions
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageState, JobState, TxnState

pytestmark = requires_qemu


def policy(sb, mode="individual", **kw):
    data = {"connection": "vm0", "drives": ["drive0", "drive1"], "bitmap": "bm",
            "target_dir": str(sb.dir), "completion_mode": mode, **kw}
    return make_policy("nightly", data)


async def reconnected(conn, attempts_before):
    """Wait until the connection came back after a QEMU restart and re-read the nodes."""
    await wait_for(lambda: conn.attempts > attempts_before and conn.model.state.value == "connected"
                   and conn.model.synced, timeout=30, what="reconnect")


def cbm(ledger, drive, connection="vm0"):
    """The bitmap of ``drive``'s current chain (named by the ledger)."""
    return chain_state(ledger, connection, drive).images[0].bitmap


def by_drive(result):
    return {d.drive: d for d in result.drives}


def assert_same(ledger, image_path, ref):
    top = next(i for i in ledger.images() if i.path == image_path)
    checks = verify_chain(ledger, top, reference=ref)
    assert all(c.ok for c in checks), checks


async def test_individual_history_failure_rebases_each_drive(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=2, failing=[1])
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = Ledger(tmp_path / "ledger.sqlite")
    pol = policy(sb)
    refs: dict[str, str] = {}

    # Round 1: no chain yet → full backups, the bitmap is added in the same transaction.
    await sb.write(0, 0, "1M", 0x11)
    await sb.write(1, "4M", "1M", 0x21)
    r1 = by_drive(await run_policy(conn, ledger, pol, timeout=60))
    assert {d.kind for d in r1.values()} == {"full"}
    assert {d.state for d in r1.values()} == {ImageState.VALID}
    assert "no chain yet" in r1["drive0"].reason
    assert conn.model.nodes["disk0"].bitmap(cbm(ledger, "drive0")).count == 0
    for i in (0, 1):
        refs[r1[f"drive{i}"].path] = await reference(sb, i, f"ref1-{i}.qcow2")

    # Round 2: writes, then incremental 1 on top of each full.
    await sb.write(0, "8M", "2M", 0x12)
    await sb.write(1, "9M", "64k", 0x22)
    r2 = by_drive(await run_policy(conn, ledger, pol, timeout=60))
    assert [r2[d].kind for d in ("drive0", "drive1")] == ["incremental", "incremental"]
    assert r2["drive0"].base == r1["drive0"].path and r2["drive1"].base == r1["drive1"].path
    assert {d.state for d in r2.values()} == {ImageState.VALID}
    for i in (0, 1):
        refs[r2[f"drive{i}"].path] = await reference(sb, i, f"ref2-{i}.qcow2")

    # Round 3: writes, drive1 fails a read in an individual transaction.
    await sb.write(0, "20M", "1M", 0x13)
    await sb.write(1, "21M", "1M", 0x23)
    await sb.arm_read_error(1)
    res3 = await run_policy(conn, ledger, pol, timeout=60)
    r3 = by_drive(res3)
    assert r3["drive0"].state is ImageState.VALID
    assert r3["drive1"].state is ImageState.INVALID
    assert "Input/output error" in (r3["drive1"].error or "")
    assert res3.exit_code == 1
    refs[r3["drive0"].path] = await reference(sb, 0, "ref3-0.qcow2")
    # drive1's bitmap was restored (its count still covers rounds 3), drive0's cleared.
    await conn.refresh()
    assert conn.model.nodes["disk0"].bitmap(cbm(ledger, "drive0")).count == 0
    assert conn.model.nodes["disk1"].bitmap(cbm(ledger, "drive1")).count > 0
    assert res3.next == [
        f"drive0: next incremental is based on {os.path.basename(r3['drive0'].path)}",
        f"drive1: next incremental is based on {os.path.basename(r2['drive1'].path)}",
    ]

    # Round 4: each drive builds on its own last valid image.
    await sb.write(0, "30M", "1M", 0x14)
    r4 = by_drive(await run_policy(conn, ledger, pol, timeout=60))
    assert r4["drive0"].base == r3["drive0"].path
    assert r4["drive1"].base == r2["drive1"].path
    assert {d.state for d in r4.values()} == {ImageState.VALID}
    for i in (0, 1):
        refs[r4[f"drive{i}"].path] = await reference(sb, i, f"ref4-{i}.qcow2")

    # Every chain the ledger calls valid equals the disk at its point in time.
    valid = [i for i in ledger.images() if i.state is ImageState.VALID]
    assert len(valid) == 7
    for im in valid:
        assert_same(ledger, im.path, refs[im.path])
    # The invalid image is really not the disk at that time (drive1's round-3 data is missing).
    assert chain_paths(ledger, ledger.images(drive="drive1")[-1]) == [
        r1["drive1"].path, r2["drive1"].path, r4["drive1"].path]
    # All targets were detached and all jobs dismissed.
    assert not [n for n in conn.model.nodes if n.startswith("bt")]
    assert not [j for j in await conn.execute("query-jobs") if j["id"].startswith("bt")]
    ledger.close()


async def test_grouped_failure_advances_nothing(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=2, failing=[1])
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = Ledger(tmp_path / "ledger.sqlite")
    pol = policy(sb, mode="grouped")

    # A grouped policy with new chains: bitmaps start in their own individual transaction.
    first = await run_policy(conn, ledger, pol, timeout=60)
    assert first.exit_code == 0 and len(first.txn_ids) == 2
    assert "grouped mode cannot hold bitmap actions" in first.notes[0]
    txns = {t.mode: t for t in ledger.txns()}
    assert sorted(txns) == ["grouped", "individual"]
    assert [a["type"] for a in txns["grouped"].actions] == ["blockdev-backup"] * 2
    # Each new chain: its bitmap and its sentinel (tui.core.chains.identity).
    assert [a["type"] for a in txns["individual"].actions] == ["block-dirty-bitmap-add"] * 4
    fulls = by_drive(first)

    await sb.write(0, "1M", "1M", 0x31)
    await sb.write(1, "2M", "1M", 0x32)
    await conn.refresh()
    before = {i: conn.model.nodes[f"disk{i}"].bitmap(cbm(ledger, f"drive{i}")).count for i in (0, 1)}
    await sb.arm_read_error(1)
    failed = await run_policy(conn, ledger, pol, timeout=60)
    f = by_drive(failed)
    assert failed.exit_code == 1 and len(failed.txn_ids) == 1
    assert f["drive0"].state is ImageState.INVALID and f["drive1"].state is ImageState.INVALID
    jobs = {j.job_id: j.state for j in ledger.jobs(failed.txn_ids[0])}
    assert sorted(jobs.values()) == [JobState.CANCELLED, JobState.FAILED]
    await conn.refresh()
    after = {i: conn.model.nodes[f"disk{i}"].bitmap(cbm(ledger, f"drive{i}")).count for i in (0, 1)}
    assert after == before and before[0] > 0
    # Nothing advanced: both drives still build on their full backups.
    for d in ("drive0", "drive1"):
        assert chain_state(ledger, "vm0", d).base.path == fulls[d].path

    again = by_drive(await run_policy(conn, ledger, pol, timeout=60))
    assert {d.state for d in again.values()} == {ImageState.VALID}
    for i in (0, 1):
        assert again[f"drive{i}"].base == fulls[f"drive{i}"].path
        ref = await reference(sb, i, f"g-ref-{i}.qcow2")
        assert_same(ledger, again[f"drive{i}"].path, ref)
    ledger.close()


async def test_restart_losing_bitmap_makes_a_full(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=2)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = Ledger(tmp_path / "ledger.sqlite")
    pol = policy(sb, persistent=True)
    await run_policy(conn, ledger, pol, timeout=60)
    # Make drive1's bitmap non-persistent (same content: empty, nothing written since the full).
    name1 = cbm(ledger, "drive1")
    await conn.execute("block-dirty-bitmap-remove", {"node": "disk1", "name": name1})
    await conn.execute("block-dirty-bitmap-add", {"node": "disk1", "name": name1})
    assert conn.model.nodes["disk1"].bitmap(cbm(ledger, "drive1")).persistent is False
    await sb.write(0, 0, "1M", 0x41)
    await sb.write(1, "1M", "1M", 0x42)
    tries = conn.attempts
    await sb.restart()  # a clean quit: persistent bitmaps are stored, the other one is gone
    await reconnected(conn, tries)
    assert conn.model.nodes["disk0"].bitmap(cbm(ledger, "drive0")) is not None
    assert conn.model.nodes["disk1"].bitmap(cbm(ledger, "drive1")) is None
    plan = make_plan(ledger, conn.model, pol)
    assert [d.kind for d in plan.drives] == ["incremental", "full"]
    assert "vanished" in plan.drives[1].reason
    res = by_drive(await run_policy(conn, ledger, pol, timeout=60))
    assert res["drive0"].kind == "incremental" and res["drive1"].kind == "full"
    assert {d.state for d in res.values()} == {ImageState.VALID}
    for i in (0, 1):
        ref = await reference(sb, i, f"r-ref-{i}.qcow2")
        assert_same(ledger, res[f"drive{i}"].path, ref)
    # The new full re-created drive1's bitmap (persistent, as the policy says).
    assert conn.model.nodes["disk1"].bitmap(cbm(ledger, "drive1")).persistent is True
    ledger.close()


async def test_persistent_bitmap_survives_clean_restart(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = Ledger(tmp_path / "ledger.sqlite")
    pol = make_policy("p", {"connection": "vm0", "drives": ["drive0"], "bitmap": "bm",
                                 "target_dir": str(sb.dir), "persistent": True})
    await run_policy(conn, ledger, pol, timeout=60)
    await sb.write(0, 0, "1M", 0x51)
    tries = conn.attempts
    await sb.restart()
    await reconnected(conn, tries)
    res = await run_policy(conn, ledger, pol, timeout=60)
    assert res.drives[0].kind == "incremental" and res.drives[0].state is ImageState.VALID
    ref = await reference(sb, 0, "p-ref.qcow2")
    assert_same(ledger, res.drives[0].path, ref)
    # A crash leaves the persistent bitmap inconsistent: the next run re-creates it with a full.
    tries = conn.attempts
    sb.kill()
    await sb.start()
    await reconnected(conn, tries)
    old = cbm(ledger, "drive0")
    assert conn.model.nodes["disk0"].bitmap(old).inconsistent
    res2 = await run_policy(conn, ledger, pol, timeout=60)
    assert res2.drives[0].kind == "full" and "inconsistent" in res2.drives[0].reason
    assert res2.drives[0].state is ImageState.VALID
    new = cbm(ledger, "drive0")
    assert new != old and not conn.model.nodes["disk0"].bitmap(new).inconsistent
    # The old chain's bitmap (ours, now unused) was removed after the new full.
    assert conn.model.nodes["disk0"].bitmap(old) is None
    ledger.close()


async def test_target_creation_failure_refuses_and_touches_nothing(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = Ledger(tmp_path / "ledger.sqlite")
    pol = make_policy("p", {"connection": "vm0", "drives": ["drive0"], "bitmap": "bm",
                                 "target_dir": str(sb.dir / "no-such-dir")})
    res = await run_policy(conn, ledger, pol, timeout=60)
    assert res.exit_code == 2 and "No such file or directory" in (res.refused or "")
    assert not conn.model.nodes["disk0"].named_bitmaps
    [txn] = ledger.txns()
    assert txn.state is TxnState.REFUSED
    [im] = ledger.images()
    assert im.state is ImageState.INVALID and not im.resets_bitmap
    assert not [n for n in conn.model.nodes if n.startswith("bt")]
    ledger.close()


async def test_check_and_compare_detect_damage(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = Ledger(tmp_path / "ledger.sqlite")
    pol = make_policy("p", {"connection": "vm0", "drives": ["drive0"], "bitmap": "bm",
                                 "target_dir": str(sb.dir)})
    await sb.write(0, 0, "1M", 0x61)
    r = await run_policy(conn, ledger, pol, timeout=60)
    path = r.drives[0].path
    assert check_image(path).ok
    await sb.write(0, "2M", "64k", 0x62)
    ref = await reference(sb, 0, "v-ref.qcow2")
    # The full backup is older than the disk now: compare says so.
    cmp = compare_images(path, ref)
    assert not cmp.ok and "mismatch" in cmp.detail.lower()
    # A damaged image fails the check.
    damage(path)
    assert not check_image(path).ok
    assert not check_image(str(sb.path("missing.qcow2"))).ok
    ledger.close()


async def test_local_qemu_img_fallback_and_interrupted_plan(make_sandbox, fleet_for, tmp_path):
    from tui.core.chains.reconcile import reconcile
    from tui.core.txn.targets import create_target

    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    full = str(sb.path("local-full.qcow2"))
    t = await create_target(conn, full, 64 << 20, node="lt0", local=True)
    assert "lt0" in conn.model.nodes and "lt0-f" in conn.model.nodes
    inc = await create_target(conn, str(sb.path("local-inc.qcow2")), 64 << 20, node="lt1",
                              backing=full, local=True)
    assert inc.node == "lt1"
    # An app killed while targets were being created: reconcile detaches them, refuses the txn.
    ledger = Ledger(tmp_path / "l.sqlite")
    txn = ledger.new_txn("vm0", "p", "individual")
    img = ledger.add_image(txn_id=txn, connection="vm0", policy="p", drive="drive0", node="disk0",
                           bitmap="bm", path=full, kind="full", parent_id=None, job_id="x",
                           source_file=None, source_size=None)
    ledger.set_image_nodes(img, t.file_node, t.node)
    # While its (live) owner runs it, reconcile leaves it alone...
    assert (await reconcile(conn, ledger)).abandoned == []
    assert ledger.txn(txn).state is TxnState.PLANNED
    # ...once the owner is gone (here: let go), reconcile cleans up.
    ledger.release([txn])
    rep = await reconcile(conn, ledger)
    assert rep.abandoned == [txn]
    assert ledger.txn(txn).state is TxnState.REFUSED
    assert ledger.image(img).state is ImageState.INVALID
    await conn.refresh()
    assert "lt0" not in conn.model.nodes and "lt1" in conn.model.nodes
    ledger.close()


async def test_chain_view_flags_lost_bitmaps_and_lists_foreign_ones(make_sandbox, fleet_for, tmp_path):
    from tui.core.chains.view import build_view

    sb = await make_sandbox(drives=2)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = Ledger(tmp_path / "l.sqlite")
    pol = policy(sb)
    await run_policy(conn, ledger, pol, timeout=60)
    await sb.write(0, 0, "1M", 0x71)
    await run_policy(conn, ledger, pol, timeout=60)
    view = build_view(ledger, fleet.store.state)
    d0 = next(d for d in view.drives if d.drive == "drive0")
    assert [i.kind for i in d0.chain] == ["full", "incremental"]
    assert d0.next_base == d0.chain[-1].path and d0.bitmap_state == "active"
    assert all(i.size and i.size > 0 for i in d0.chain)
    assert view.points[0].txn_id == 2 and len(view.points[0].images) == 2
    assert view.problems == []
    ours = {d: cbm(ledger, d) for d in ("drive0", "drive1")}

    tries = conn.attempts
    await sb.restart()
    await reconnected(conn, tries)
    foreign = {"someone-elses": "unknown", "pbs-incremental-dirty-bitmap": "Proxmox Backup Server",
               "virtnbdbackup.0": "virtnbdbackup", "1525889631": "libvirt checkpoint",
               "qmpbackup-disk1-3f2b7c1e-9a4d-4e2b-8c11-0a1b2c3d4e5f": "qmpbackup",
               "VeeamTmp_1b2c": "Veeam", "bt.0badc0de.nightly.c3": "bitmap-tui ledger 0badc0de"}
    for name in foreign:
        await conn.execute("block-dirty-bitmap-add", {"node": "disk1", "name": name})
    view = build_view(ledger, fleet.store.state)
    kinds = sorted((p.kind, p.node, p.bitmap) for p in view.problems)
    # Only what is ours is a problem; the others are listed with their owner, no fix offered.
    assert kinds == [("lost", "disk0", ours["drive0"]), ("lost", "disk1", ours["drive1"])]
    assert all(p.command is None for p in view.problems)
    listed = {b.name: (b.owner, b.ours) for b in view.bitmaps}
    assert listed == {name: (owner, False) for name, owner in foreign.items()}
    d0 = next(d for d in view.drives if d.drive == "drive0")
    assert d0.next_base is None and d0.bitmap_state == "missing"
    assert view.to_dict()["bitmaps"][0]["owner"]
    # Offline (no live state): the ledger alone, no problems claimed.
    offline = build_view(ledger)
    assert {d.bitmap_state for d in offline.drives} == {"unknown"} and offline.problems == []
    # The next run: new owned chains; the foreign bitmaps are untouched.
    res = by_drive(await run_policy(conn, ledger, pol, timeout=60))
    assert {d.kind for d in res.values()} == {"full"} and {d.state for d in res.values()} == {
        ImageState.VALID}
    await conn.refresh()
    names = {b.name for b in conn.model.nodes["disk1"].named_bitmaps}
    assert names == set(foreign) | with_companions({cbm(ledger, "drive1")})
    ledger.close()


async def test_existing_file_is_never_overwritten(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = Ledger(tmp_path / "l.sqlite")
    pol = make_policy("p", {"connection": "vm0", "drives": ["drive0"], "bitmap": "bm",
                                 "target_dir": str(sb.dir)})
    precious = sb.path("drive0-full-1.qcow2")
    precious.write_bytes(b"operator data")
    res = await run_policy(conn, ledger, pol, timeout=60)
    assert res.exit_code == 2 and "already exists" in (res.refused or "")
    assert precious.read_bytes() == b"operator data"
    assert not conn.model.nodes["disk0"].named_bitmaps
    assert "move it away" in res.refused
    # The operator moves it away; the next run goes ahead under that name.
    await asyncio.to_thread(precious.rename, sb.path("kept.qcow2"))
    ok = await run_policy(conn, ledger, pol, timeout=60)
    assert ok.exit_code == 0 and ok.drives[0].path == str(precious)
    assert sb.path("kept.qcow2").read_bytes() == b"operator data"
    ledger.close()
