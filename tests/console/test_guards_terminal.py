"""A lost terminal always ends the console within a few seconds and frees the QMP socket:
tmux is killed under CPU load, with a dialog open and a block job running, 20 times."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from tests.kit.common import requires_qemu, wait_for
from tests.kit.terminal import Tmux, cpu_load

pytestmark = [
    requires_qemu,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed"),
]

EXE = Path(sys.executable).parent / "bitmap-tui"
ROUNDS = int(os.environ.get("GUARDS_ROUNDS", "20"))
# The watchdog's 5 s, and slack for a loaded machine.
GONE_WITHIN = 12.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose (tmux, its parent, may be dead already)
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


async def gone(pid: int, timeout: float = GONE_WITHIN) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while alive(pid):
        if loop.time() > end:
            return False
        await asyncio.sleep(0.05)
    return True


def socket_is_free(path: Path, timeout: float = 3.0) -> bool:
    """Another client connects and gets QEMU's greeting."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        try:
            return b'"QMP"' in s.recv(4096)
        except TimeoutError:
            return False


async def console_pid(t: Tmux) -> int:
    return int(t.tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip())


async def test_killing_the_terminal_always_ends_the_console_and_frees_the_socket(make_sandbox):
    sb = await make_sandbox(drives=1)
    await sb.add_bitmap(0, "bm0")
    await sb.qmp("blockdev-add", {"driver": "null-co", "node-name": "tgt", "size": 64 << 20})
    await sb.qmp("blockdev-backup", {"job-id": "slow", "device": "disk0", "target": "tgt",
                                     "sync": "full", "speed": 4096})
    failures = []
    with cpu_load():
        for i in range(ROUNDS):
            t = Tmux([str(EXE), "--connect", sb.address], width=100, height=30)
            t.start()
            try:
                pid = await console_pid(t)
                await t.wait_screen("slow", "running", timeout=60)
                if i % 2 == 0:  # a dialog open
                    t.keys("n")
                    await t.wait_screen("New bitmap on", timeout=30)
            finally:
                t.tmux("kill-server" if i % 3 else "kill-session")
                if i % 3 == 0:
                    t.stop()
            if not await gone(pid):
                failures.append(f"round {i}: pid {pid} still running")
                os.kill(pid, 9)
            elif not socket_is_free(sb.socket):
                failures.append(f"round {i}: the QMP socket is still held")
    assert failures == []
    jobs = await sb.qmp("query-block-jobs")
    assert [j["device"] for j in jobs] == ["slow"], "the job ran on; nothing was cancelled"


async def test_killing_the_terminal_of_the_demo_removes_its_qemu_and_files(tmp_path,
                                                                           monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    for i in range(max(ROUNDS // 4, 2)):
        t = Tmux([str(EXE), "demo"], width=100, height=30)
        t.start()
        try:
            pid = await console_pid(t)
            await t.wait_screen("connected", timeout=60)
            t.keys("n")
            await t.wait_screen("New bitmap on", timeout=30)
        finally:
            t.stop()
        assert await gone(pid), f"round {i}: the demo console is still running"
        await wait_for(lambda: not list(scratch.iterdir()), 5, f"round {i}: scratch removed")
