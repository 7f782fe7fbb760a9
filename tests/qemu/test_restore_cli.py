"""Headless ``points`` and ``restore`` against a real QEMU, including a SIGKILLed restore."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kit.chains import absent, cli, reference, same
from tests.kit.common import requires_qemu, wait_for

pytestmark = requires_qemu


async def two_points(sb, cfg, env):
    """A full and an incremental of drive0 (drive1 too), and each point's reference copy."""
    conn = ["--connect", f"vm0={sb.address}", "--config", str(cfg)]
    refs = []
    for n, pattern in enumerate((0x31, 0x32), 1):
        await sb.write(0, f"{n}M", "1M", pattern)
        res = await asyncio.to_thread(cli, ["backup", "nightly", *conn], env)
        assert res.returncode == 0, res.stderr
        refs.append(await reference(sb, 0, f"ref{n}.qcow2"))
    return conn, refs


async def test_points_and_restore_cli(make_sandbox, setup, tmp_path):
    sb = await make_sandbox(drives=2)
    cfg, env = setup(sb)
    conn, refs = await two_points(sb, cfg, env)
    res = await asyncio.to_thread(cli, ["points", "nightly", "--drive", "drive0", "--json",
                                        *conn], env)
    assert res.returncode == 0, res.stderr
    pts = json.loads(res.stdout)["points"]
    assert [(p["point"], p["kind"], p["verdict"]) for p in pts] == [
        (1, "full", "valid"), (2, "incremental", "valid")]
    assert {"policy", "drive", "point", "time", "kind", "image", "chain", "vm_point"} <= set(pts[0])
    assert pts[1]["chain"] == [pts[0]["image"], pts[1]["image"]] and pts[1]["vm_point"] == 2
    text = await asyncio.to_thread(cli, ["points", *conn], env)
    assert "vm0/drive1 (policy nightly)" in text.stdout
    assert "VM-wide point 2 (" in text.stdout and "drive0 point 2, drive1 point 2" in text.stdout

    for n, route in ((1, "local"), (2, "qemu")):
        out = str(tmp_path / f"r{n}.qcow2")
        res = await asyncio.to_thread(cli, ["restore", "nightly", "drive0", "--point", str(n),
                                            "--to", out, "--route", route, "--json", *conn], env)
        assert res.returncode == 0, res.stderr
        got = json.loads(res.stdout)
        assert got["checked"] is True and got["image"] == out and got["point"] == n
        assert got["chain"] == pts[n - 1]["chain"] and got["format"] == "qcow2"
        assert same(out, refs[n - 1]).returncode == 0
    # --at: the newest point at or before that time.
    out = str(tmp_path / "at.qcow2")
    res = await asyncio.to_thread(cli, ["restore", "nightly", "drive0", "--at", pts[1]["time"],
                                        "--to", out, *conn], env)
    assert res.returncode == 0, res.stderr
    assert "checked: identical to the chain" in res.stdout
    assert "drive0 point 2 →" in res.stdout  # the time `points` printed selects that point
    # refused: the file exists / no such point / read-only
    again = await asyncio.to_thread(cli, ["restore", "nightly", "drive0", "--point", "1",
                                          "--to", out, *conn], env)
    assert again.returncode == 2 and "exists and is never overwritten" in again.stderr
    missing = await asyncio.to_thread(cli, ["restore", "nightly", "drive0", "--point", "9",
                                            "--to", str(tmp_path / "x.qcow2"), *conn], env)
    assert missing.returncode == 2 and "no point 9 (points: 1, 2)" in missing.stderr
    ro = await asyncio.to_thread(cli, ["restore", "nightly", "drive0", "--point", "1", "--read-only",
                                       "--to", str(tmp_path / "ro.qcow2"), *conn], env)
    assert ro.returncode == 2 and "read-only: not writing" in ro.stderr
    assert absent(str(tmp_path / "ro.qcow2"))
    # the audit log names the local write
    audit = os.path.join(env["XDG_STATE_HOME"], "bitmap-tui", "audit.jsonl")
    lines = (await asyncio.to_thread(Path(audit).read_text)).splitlines()
    assert any('"command":"qemu-img convert"' in line for line in lines)


async def test_export_cli_for_seconds(make_sandbox, setup, tmp_path):
    sb = await make_sandbox(drives=2)
    cfg, env = setup(sb)
    conn, refs = await two_points(sb, cfg, env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tui", "restore", "nightly", "drive0", "--point", "1", "--export",
        "--for", "30", "--json", *conn, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    uri = json.loads(line)["uri"]
    cmp = await asyncio.to_thread(subprocess.run, ["qemu-img", "compare", "-F", "qcow2", uri,
                                                   refs[0]], capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    proc.send_signal(signal.SIGINT)  # Ctrl-C ends the export
    assert await asyncio.wait_for(proc.wait(), 30) in (0, 130)
    assert await sb.qmp("query-block-exports") == []
    nodes = await sb.qmp("query-named-block-nodes")
    assert not [n["node-name"] for n in nodes if n["node-name"].startswith("rs")]
    sock = uri.split("socket=")[1]
    assert absent(sock) and absent(os.path.dirname(sock))


@pytest.mark.parametrize("route", ["local", "qemu"])
async def test_killed_restore_is_repaired_by_the_next(make_sandbox, setup, tmp_path, route):
    sb = await make_sandbox(drives=2)
    cfg, env = setup(sb)
    await sb.write(0, "16M", "16M", 0x41)
    conn, refs = await two_points(sb, cfg, env)
    out = str(tmp_path / "slow.qcow2")
    proc = subprocess.Popen([sys.executable, "-m", "tui", "restore", "nightly", "drive0", "--point",
                             "2", "--to", out, "--route", route, "--speed", str(1 << 20), *conn],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partials = lambda: [f for f in os.listdir(tmp_path) if f.endswith(".partial")]  # noqa: E731
    await wait_for(lambda: bool(partials()), timeout=60, what="the partial file")
    if route == "qemu":
        async def job_running() -> bool:
            return any(j["id"].startswith("rs") for j in await sb.qmp("query-jobs"))
        for _ in range(200):
            if await job_running():
                break
            await asyncio.sleep(0.05)
    else:
        await asyncio.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert absent(out) and partials()
    # The next restore (any point) removes what the killed one left, then does its own.
    res = await asyncio.to_thread(cli, ["restore", "nightly", "drive0", "--point", "2",
                                        "--to", out, "--route", route, *conn], env)
    assert res.returncode == 0, res.stderr
    assert partials() == []
    assert same(out, refs[1]).returncode == 0
    if route == "qemu":
        assert not [j for j in await sb.qmp("query-jobs") if j["id"].startswith("rs")]
        nodes = await sb.qmp("query-named-block-nodes")
        assert not [n["node-name"] for n in nodes if n["node-name"].startswith("rs")]
