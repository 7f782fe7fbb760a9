"""Retention against a real QEMU: prune keeps exactly the selected points, every kept point still
restores equal to its reference, and a prune interrupted at any step is finished by the next."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import time

from tests.kit.chains import absent, cli, history, same
from tests.kit.common import make_policy, requires_qemu
from tui.core.chains.points import list_points
from tui.core.chains.policy import Keep
from tui.core.chains.prune import _qemu_img, finish_step, plan_prune, prune, record_step, select
from tui.core.chains.restore import restore_local, restore_qemu
from tui.core.ledger.points_repository import PointsLedger
from tui.core.ledger.rows import PruneState

pytestmark = requires_qemu

DAY = 86400.0


def one_drive(sb, **kw):
    return make_policy("p", {"connection": "vm0", "drives": ["drive0"], "bitmap": "bm",
                                  "target_dir": str(sb.dir), **kw})


def rounds(n):
    return [[(0, f"{2 * i}M", "1M", 0x40 + i)] for i in range(n)]


def verdicts(ledger):
    return {p.point: p.verdict for p in list_points(ledger, drive="drive0")}


async def restores_equal(conn, ledger, refs, tmp_path, tag):
    """Every restorable point restores (both routes) equal to its reference."""
    n = 0
    for p in list_points(ledger, drive="drive0"):
        if not p.restorable:
            continue
        ref = refs[ledger.image(p.image_id).path]
        local = str(tmp_path / f"{tag}-l{p.point}.qcow2")
        restore_local(ledger, p, local, "qcow2")
        assert same(local, ref).returncode == 0, (p, same(local, ref).stdout)
        via = str(tmp_path / f"{tag}-q{p.point}.qcow2")
        await restore_qemu(conn, ledger, p, via, "qcow2", local_files=True)
        assert same(via, ref).returncode == 0
        n += 1
    return n


async def test_keep_last_merges_and_deletes_chains(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = PointsLedger(tmp_path / "l.sqlite")
    pol = one_drive(sb, full_every=3, keep={"last": 2})
    refs = await history(sb, conn, ledger, pol, rounds(6))
    pts = list_points(ledger, drive="drive0")
    assert [p.kind for p in pts] == ["full", "incremental", "incremental"] * 2
    plan = plan_prune(ledger, pol)
    assert plan.drives[0].kept == {5: "last", 6: "last"} and plan.drives[0].removed == [1, 2, 3, 4]
    assert [s.action for s in plan.steps] == ["delete-chain", "merge"]
    chain_a = sorted({f for p in pts[:3] for f in p.chain})
    res = prune(ledger, pol)
    assert res.ok, res.failed
    assert verdicts(ledger) == {1: "pruned", 2: "pruned", 3: "pruned", 4: "pruned", 5: "valid",
                                6: "valid"}
    assert all(absent(f) for f in chain_a) and absent(pts[4].image)
    now = {p.point: p for p in list_points(ledger, drive="drive0")}
    assert now[5].chain == (pts[3].image,)  # the full's file holds point 5
    assert now[6].chain == (pts[3].image, pts[5].image)
    assert await restores_equal(conn, ledger, refs, tmp_path, "a") == 2
    # Nothing more to do: a second prune is a no-op.
    assert prune(ledger, pol).plan.steps == []

    # The next backups build on the pruned chain; pruning again merges the next point in.
    pol2 = one_drive(sb, keep={"last": 2})
    refs.update(await history(sb, conn, ledger, pol2, [[(0, "40M", "1M", 0x77)]]))
    assert list_points(ledger, drive="drive0")[-1].kind == "incremental"
    assert prune(ledger, pol2).ok
    assert [p.point for p in list_points(ledger, drive="drive0") if p.restorable] == [6, 7]
    assert list_points(ledger, drive="drive0")[5].chain == (pts[3].image,)
    assert await restores_equal(conn, ledger, refs, tmp_path, "b") == 2
    ledger.close()


def set_times(ledger_path, times):
    """Give the drive's points these times (the ledger's record), oldest first."""
    db = sqlite3.connect(ledger_path)
    ids = [r[0] for r in db.execute("SELECT id FROM images ORDER BY id")]
    with db:
        for i, t in zip(ids, times, strict=True):
            db.execute("UPDATE images SET created = ? WHERE id = ?", (t, i))
    db.close()


async def test_daily_weekly_monthly_keep_exactly_the_selected(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    path = tmp_path / "l.sqlite"
    ledger = PointsLedger(path)
    pol = one_drive(sb, keep={"daily": 2, "weekly": 1, "monthly": 1})
    refs = await history(sb, conn, ledger, pol, rounds(7))
    noon = time.mktime((2026, 11, 30, 12, 0, 0, 0, 0, -1))  # a Monday
    # p1 Sep 1, p2 Oct 20, p3 Nov 16, p4 Nov 27, p5 Nov 29 09:00, p6 Nov 29 10:00, p7 Nov 30
    times = [time.mktime((2026, 9, 1, 12, 0, 0, 0, 0, -1)), noon - 41 * DAY, noon - 14 * DAY,
             noon - 3 * DAY, noon - DAY - 3 * 3600, noon - DAY - 2 * 3600, noon]
    set_times(path, times)
    plan = plan_prune(ledger, pol)
    # daily: Nov 30 (p7), Nov 29 (p6; p5 the same day); weekly: weeks 49 and 48 are kept
    # already, so week 47 (p3); monthly: November is kept already, so October (p2); p1 goes.
    assert plan.drives[0].kept == {7: "daily", 6: "daily", 3: "weekly", 2: "monthly",
                                   4: "needed by point 7", 5: "needed by point 7"}
    assert plan.drives[0].removed == [1]
    assert [s.action for s in plan.steps] == ["merge"]
    assert prune(ledger, pol).ok
    assert [p.point for p in list_points(ledger, drive="drive0") if p.restorable] == [2, 3, 4, 5,
                                                                                       6, 7]
    assert await restores_equal(conn, ledger, refs, tmp_path, "d") == 6
    ledger.close()


def test_selection_rules_follow_proxmox():
    from tui.core.chains.points import Point

    def pt(n, t):
        return Point("vm0", "p", "d", n, t, "incremental", f"/x/{n}", (f"/x/{n}",), "valid", None,
                     n, n)

    base = time.mktime((2026, 6, 15, 1, 0, 0, 0, 0, -1))  # Monday 01:00
    pts = [pt(i + 1, base + i * DAY / 2) for i in range(10)]  # 01:00 and 13:00, Mon to Fri
    assert set(select(pts, Keep(last=3))) == {10, 9, 8}
    assert select(pts, Keep(daily=2)) == {10: "daily", 8: "daily"}
    # last first, then days not yet covered by a kept point
    assert select(pts, Keep(last=1, daily=2)) == {10: "last", 8: "daily", 6: "daily"}
    assert select(pts, Keep(weekly=5)) == {10: "weekly"}  # one ISO week
    assert select(pts, Keep(monthly=1, daily=1)) == {10: "daily"}
    assert set(select(pts, Keep())) == {10}  # the newest is always kept (next base)
    assert select([], Keep(last=1)) == {}


async def test_interrupted_steps_are_finished_by_the_next_prune(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = PointsLedger(tmp_path / "l.sqlite")
    pol = one_drive(sb, full_every=3, keep={"last": 1})
    refs = await history(sb, conn, ledger, pol, rounds(6))
    delete_chain, merge = plan_prune(ledger, pol).steps
    # Killed right after the delete-chain step was written, and after one of its files went.
    s1 = record_step(ledger, "vm0", delete_chain)
    os.unlink(delete_chain.delete[0])
    # Killed after qemu-img commit ran but before the ledger heard of it.
    s2 = record_step(ledger, "vm0", merge)
    assert merge.top is not None and merge.base is not None
    _qemu_img(["commit", "-q", "-d", "-f", "qcow2", "-b", merge.base, merge.top.image])
    ledger.release_prune_steps([s1, s2])
    assert {s.id: s.state for s in ledger.prune_steps(open_only=True)} == {
        s1: PruneState.PLANNED, s2: PruneState.PLANNED}
    # Meanwhile the drive's points are not offered for restore.
    assert {p.verdict for p in list_points(ledger, drive="drive0")} == {"pruned", "busy"}
    res = prune(ledger, pol)
    assert res.ok, res.failed
    assert any(line.startswith("already gone") for line in res.done)
    assert ledger.prune_steps(open_only=True) == []
    assert verdicts(ledger) == {1: "pruned", 2: "pruned", 3: "pruned", 4: "pruned", 5: "valid",
                                6: "valid"}
    assert await restores_equal(conn, ledger, refs, tmp_path, "k") == 2
    ledger.close()


async def test_interrupted_after_commit_record_and_rebase(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = PointsLedger(tmp_path / "l.sqlite")
    pol = one_drive(sb, keep={"last": 2})
    refs = await history(sb, conn, ledger, pol, rounds(5))
    [merge] = plan_prune(ledger, pol).steps
    sid = record_step(ledger, "vm0", merge)
    row = next(s for s in ledger.prune_steps() if s.id == sid)
    # Run the step but stop it (as a kill would) just before its files are deleted.
    import tui.core.chains.prune as prune_mod

    real = prune_mod.delete_checked
    prune_mod.delete_checked = lambda *a: (_ for _ in ()).throw(prune_mod.PruneError("killed"))
    try:
        try:
            finish_step(ledger, row)
        except prune_mod.PruneError:
            pass
    finally:
        prune_mod.delete_checked = real
    assert ledger.prune_steps(open_only=True)[0].state is PruneState.REBASED
    assert prune(ledger, pol).ok
    assert [p.point for p in list_points(ledger, drive="drive0") if p.restorable] == [4, 5]
    assert all(absent(f) for f in merge.delete)
    assert await restores_equal(conn, ledger, refs, tmp_path, "r") == 2
    ledger.close()


async def test_prune_cli_dry_run_read_only_and_auto(make_sandbox, setup, tmp_path):
    sb = await make_sandbox(drives=2)
    cfg, env = setup(sb, keep={"last": 1})
    conn = ["--connect", f"vm0={sb.address}", "--config", str(cfg)]
    for i in range(3):
        await sb.write(0, f"{i}M", "1M", 0x50 + i)
        res = await asyncio.to_thread(cli, ["backup", "nightly", *conn], env)
        assert res.returncode == 0, res.stderr
    files = sorted(f for f in os.listdir(sb.dir) if f.startswith("drive"))
    dry = await asyncio.to_thread(cli, ["prune", "nightly", "--dry-run", *conn], env)
    assert dry.returncode == 0, dry.stderr
    assert "drive0: keep points 2 (needed by point 3), 3 (last); remove 1" in dry.stdout
    # The newest file is the next incremental's backing file: the point before it is merged.
    assert ("  drive0: remove points 1: qemu-img commit drive0-incr-2.qcow2 into drive0-full-1.qcow2"
            " (it then holds point 2), rebase drive0-incr-3.qcow2 onto it, delete "
            "drive0-incr-2.qcow2") in dry.stdout
    ro = await asyncio.to_thread(cli, ["prune", "nightly", "--read-only", *conn], env)
    assert ro.returncode == 2 and "read-only: not pruning" in ro.stderr
    assert sorted(f for f in os.listdir(sb.dir) if f.startswith("drive")) == files
    done = await asyncio.to_thread(cli, ["prune", "nightly", "--json", *conn], env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [d["remove"] for d in out["drives"]] == [[1], [1]]
    left = sorted(f for f in os.listdir(sb.dir) if f.startswith("drive") and "qcow2" in f)
    assert left == ["drive0-full-1.qcow2", "drive0-incr-3.qcow2", "drive0.qcow2",
                    "drive1-full-1.qcow2", "drive1-incr-3.qcow2", "drive1.qcow2"]
    # prune: auto after each backup
    cfg2, env2 = setup(sb, keep={"last": 1}, prune="auto")
    res = await asyncio.to_thread(cli, ["backup", "nightly", "--json", "--config", str(cfg2),
                                        "--connect", f"vm0={sb.address}"], env)
    assert res.returncode == 0, res.stderr
    assert [d["remove"] for d in json.loads(res.stdout)["prune"]["drives"]] == [[2], [2]]
    # The chain stays restorable and two files long: full (holding point 3) ← incr-4.
    out = json.loads((await asyncio.to_thread(cli, ["points", "nightly", "--drive", "drive0",
                                                    "--json", *conn], env)).stdout)["points"]
    assert [(p["point"], p["verdict"]) for p in out] == [(1, "pruned"), (2, "pruned"),
                                                         (3, "valid"), (4, "valid")]
    assert [os.path.basename(f) for f in out[3]["chain"]] == ["drive0-full-1.qcow2",
                                                              "drive0-incr-4.qcow2"]
    ver = await asyncio.to_thread(cli, ["verify", "--json", *conn], env)
    assert ver.returncode == 0, ver.stdout  # the merged chain: full-1 ← incr-4, both checked
    assert [os.path.basename(c["path"]) for c in json.loads(ver.stdout)["drives"][0]["checks"]] \
        == ["drive0-full-1.qcow2", "drive0-incr-4.qcow2"]
    back = str(tmp_path / "p4.qcow2")
    res = await asyncio.to_thread(cli, ["restore", "nightly", "drive0", "--point", "4", "--to",
                                        back, *conn], env)
    assert res.returncode == 0, res.stderr
    audit = os.path.join(env["XDG_STATE_HOME"], "bitmap-tui", "audit.jsonl")
    text = await asyncio.to_thread(subprocess.run, ["cat", audit], capture_output=True, text=True)
    assert '"command":"qemu-img commit"' in text.stdout and '"command":"unlink"' in text.stdout
