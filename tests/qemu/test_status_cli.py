"""`bitmap-tui status` against a real QEMU with a bitmap in each state, and against bad peers."""

from __future__ import annotations

import asyncio
import json
import sys

from tests.kit.common import requires_qemu


async def status(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tui", "status", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


@requires_qemu
async def test_status_json_every_state(make_sandbox):
    sb = await make_sandbox(drives=2)
    # inconsistent: a stored persistent bitmap is marked in-use while QEMU has the image open;
    # a QEMU killed then leaves it inconsistent.
    await sb.add_bitmap(1, "crashed", persistent=True)
    await sb.restart()  # clean quit stores it
    await sb.write(1, 0, "64k")
    await sb.restart(kill=True)
    await sb.add_bitmap(0, "bm-active")
    await sb.add_bitmap(0, "bm-disabled", disabled=True)
    await sb.add_bitmap(1, "pbs-incremental-dirty-bitmap")
    await sb.write(0, 0, "4M")
    await sb.qmp("blockdev-add", {"driver": "null-co", "node-name": "tgt", "size": 64 * 2**20})
    await sb.qmp("blockdev-backup", {"job-id": "slow", "device": "disk0", "target": "tgt",
                                     "sync": "incremental", "bitmap": "bm-active", "speed": 65536})

    rc, out, err = await status("--connect", f"vm={sb.address}", "--json")
    assert rc == 0, err
    data = json.loads(out)
    (conn,) = data["connections"]
    assert conn["name"] == "vm" and conn["state"] == "connected" and conn["error"] is None
    assert conn["qemu_version"].startswith("7.")
    nodes = {n["node_name"]: n for n in conn["nodes"]}
    assert set(nodes) == {"disk0", "disk1", "tgt"}  # tgt: the backup target added above
    for key in ("node_name", "device", "driver", "file", "size", "bitmaps"):
        assert key in nodes["disk0"]
    bms = {b["name"]: b for n in nodes.values() for b in n["bitmaps"]}
    assert bms["bm-active"]["state"] == "frozen" and bms["bm-active"]["busy"] is True
    assert bms["bm-disabled"]["state"] == "disabled" and bms["bm-disabled"]["recording"] is False
    assert bms["crashed"]["state"] == "inconsistent" and bms["crashed"]["persistent"] is True
    assert bms["bm-active"]["owner"] == "unknown" and bms["pbs-incremental-dirty-bitmap"]["owner"] == \
        "Proxmox Backup Server"
    anon = [b for b in nodes["disk0"]["bitmaps"] if b["name"] is None]
    assert anon and all(b["state"] in ("active", "disabled") for b in anon)
    for b in bms.values():
        assert set(b) >= {"name", "state", "count", "granularity", "persistent", "recording",
                          "busy", "inconsistent"}
    (job,) = conn["jobs"]
    assert job["id"] == "slow" and job["type"] == "backup" and job["status"] == "running"
    assert 0 <= job["current"] < job["total"] == 4 * 2**20 and job["error"] is None

    await sb.qmp("job-cancel", {"id": "slow"})
    await sb.qmp("block-dirty-bitmap-add", {"node": "disk1", "name": "fresh"})
    rc, out, _ = await status("--connect", sb.address)
    assert rc == 0
    assert "bm-active" in out and "active" in out and "inconsistent" in out and "drive0" in out


async def test_status_bad_peers_one_line_each_and_exit_2(fake_qmp, tmp_path):
    good = await fake_qmp()
    garbage = await fake_qmp(mode="garbage")
    http = await fake_qmp(mode="http")
    rc, out, err = await status(
        "--timeout", "1",
        "--connect", f"good={good.address}",
        "--connect", f"junk={garbage.address}",
        "--connect", f"web={http.address}",
        "--connect", f"gone=unix:{tmp_path}/missing.sock",
        "--connect", "typo=vm1",
    )
    assert rc == 2
    assert "Traceback" not in out + err
    lines = {line.split(" ")[0]: line for line in out.splitlines() if not line.startswith(" ")}
    assert "connected" in lines["good"]
    assert "not a QMP server" in lines["junk"]
    assert "not a QMP server" in lines["web"] or "closed" in lines["web"]
    assert "no such socket" in lines["gone"]
    assert "bad address" in lines["typo"]


async def test_status_silent_server_times_out(fake_qmp):
    silent = await fake_qmp(mode="silent")
    rc, out, _ = await status("--timeout", "0.5", "--connect", f"s={silent.address}", "--json")
    assert rc == 2
    conn = json.loads(out)["connections"][0]
    assert conn["state"] == "failed" and "timed out" in conn["error"]
