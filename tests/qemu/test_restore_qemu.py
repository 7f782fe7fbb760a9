"""Restore points against a real QEMU: every point of a history restored (qemu-img, a block job in
QEMU, an NBD export) equals a reference copy of the disk taken at that point."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from tests.kit.chains import absent, history, same
from tests.kit.common import make_policy, requires_qemu
from tui.core.chains.points import find_point, list_points
from tui.core.chains.restore import (
    RestoreFailed,
    RestoreRefused,
    end_export,
    restore_local,
    restore_qemu,
    start_export,
)
from tui.core.chains.run import run_policy
from tui.core.ledger.points_repository import PointsLedger
from tui.core.ledger.rows import RestoreState

pytestmark = requires_qemu


def standalone(path: str, fmt: str = "qcow2") -> bool:
    out = subprocess.run(["qemu-img", "info", "-f", fmt, path], capture_output=True, text=True,
                         check=True).stdout
    return "backing file" not in out


ROUNDS = [
    [(0, 0, "1M", 0x11), (1, "4M", "1M", 0x21)],
    [(0, "8M", "2M", 0x12), (1, "9M", "64k", 0x22)],
    [(0, "1M", "64k", 0x13), (0, "20M", "1M", 0x14), (1, "21M", "1M", 0x23)],
    [(0, "8M", "1M", 0x15), (1, 0, "1M", 0x24)],
]


async def test_every_point_restores_equal_by_both_routes_and_nbd(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=2)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = PointsLedger(tmp_path / "ledger.sqlite")
    pol = make_policy("nightly", {"connection": "vm0", "drives": ["drive0", "drive1"],
                                       "bitmap": "bm", "target_dir": str(sb.dir)})
    refs = await history(sb, conn, ledger, pol, ROUNDS)
    points = list_points(ledger, policy="nightly")
    assert [(p.drive, p.point, p.kind) for p in points if p.drive == "drive0"] == [
        ("drive0", 1, "full"), ("drive0", 2, "incremental"), ("drive0", 3, "incremental"),
        ("drive0", 4, "incremental")]
    assert all(p.restorable and p.vm_point == p.txn_id for p in points)
    assert len(points[3].chain) == 4 and points[3].chain[0] == points[0].image
    assert points[4].drive == "drive1" and points[4].point == 1
    # Each point differs from the next (the test would pass trivially otherwise).
    d0 = [p for p in points if p.drive == "drive0"]
    assert same(refs[d0[0].image], refs[d0[1].image]).returncode == 1

    for p in points:
        ref = refs[p.image]
        local = str(tmp_path / f"local-{p.drive}-{p.point}.qcow2")
        res = restore_local(ledger, p, local, "qcow2")
        assert res.checked is True and res.route == "local"
        assert same(local, ref).returncode == 0, same(local, ref).stdout
        assert standalone(local)
        via = str(tmp_path / f"qemu-{p.drive}-{p.point}.qcow2")
        res = await restore_qemu(conn, ledger, p, via, "qcow2", local_files=True)
        assert res.checked is True and res.route == "qemu"
        assert same(via, ref).returncode == 0
        assert standalone(via)
    # raw, both routes
    p = d0[2]
    for route in ("local", "qemu"):
        raw = str(tmp_path / f"raw-{route}.img")
        if route == "local":
            restore_local(ledger, p, raw, "raw")
        else:
            await restore_qemu(conn, ledger, p, raw, "raw", local_files=True)
        assert same(raw, refs[p.image], "raw").returncode == 0
    # Nothing of the restores is left in QEMU, and no partial file on disk.
    nodes = await conn.execute("query-named-block-nodes", {"flat": True})
    assert not [n["node-name"] for n in nodes if n["node-name"].startswith("rs")]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".partial")]
    assert {r.state for r in ledger.restores()} == {RestoreState.DONE}

    # NBD export of every drive0 point, read with qemu-img compare.
    for p in d0:
        export = await start_export(conn, ledger, p)
        assert export.uri.startswith("nbd+unix:///drive0-point-")
        cmp = await asyncio.to_thread(
            subprocess.run, ["qemu-img", "compare", "-F", "qcow2", export.uri, refs[p.image]],
            capture_output=True, text=True, check=False)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        await end_export(conn, ledger, export)
        assert absent(export.socket)
    assert await conn.execute("query-block-exports") == []
    nodes = await conn.execute("query-named-block-nodes", {"flat": True})
    assert not [n["node-name"] for n in nodes if n["node-name"].startswith("rs")]
    ledger.close()


async def test_refusals_and_a_damaged_chain(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=2, failing=[1])
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = PointsLedger(tmp_path / "ledger.sqlite")
    pol = make_policy("nightly", {"connection": "vm0", "drives": ["drive0", "drive1"],
                                       "bitmap": "bm", "target_dir": str(sb.dir)})
    await history(sb, conn, ledger, pol, ROUNDS[:2])
    await sb.write(1, "30M", "1M", 0x25)
    await sb.arm_read_error(1)
    await run_policy(conn, ledger, pol, timeout=60)
    points = list_points(ledger, drive="drive1")
    assert [p.verdict for p in points] == ["valid", "valid", "invalid"]
    assert points[2].vm_point is None and points[1].vm_point == points[1].txn_id
    target = str(tmp_path / "out.qcow2")
    with pytest.raises(RestoreRefused, match="point 3 cannot be restored: its image is INVALID"):
        restore_local(ledger, points[2], target, "qcow2")
    with pytest.raises(RestoreRefused, match="INVALID"):
        await restore_qemu(conn, ledger, points[2], target, "qcow2", local_files=True)
    assert absent(target)
    # --at picks the newest restorable point at or before the time.
    assert find_point(points, at=points[2].time + 5).point == 2
    with pytest.raises(Exception, match="no restorable point"):
        find_point(points, at=points[0].time - 1)

    precious = tmp_path / "precious.qcow2"
    precious.write_bytes(b"keep me")
    for call in (lambda: restore_local(ledger, points[1], str(precious), "qcow2"),):
        with pytest.raises(RestoreRefused, match="exists and is never overwritten"):
            call()
    with pytest.raises(RestoreRefused, match="exists"):
        await restore_qemu(conn, ledger, points[1], str(precious), "qcow2", local_files=True)
    assert precious.read_bytes() == b"keep me"

    # A chain whose files no longer match the ledger: refused to copy, nothing left behind.
    full = points[0].image
    os.rename(full, full + ".moved")
    with pytest.raises(RestoreFailed):
        restore_local(ledger, points[1], target, "qcow2")
    with pytest.raises(RestoreFailed):
        await restore_qemu(conn, ledger, points[1], target, "qcow2", local_files=True)
    assert absent(target)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".partial")]
    nodes = await conn.execute("query-named-block-nodes", {"flat": True})
    assert not [n["node-name"] for n in nodes if n["node-name"].startswith("rs")]
    ledger.close()
