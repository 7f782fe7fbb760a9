"""A busy QMP socket (another client holds it, or QEMU is stopped) is named as such, in one line naming the socket;
the console keeps retrying and connects once the other client leaves. Real QEMU throughout."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

from tests.kit.common import requires_qemu, wait_for
from tui.core.model.state import LinkState

pytestmark = requires_qemu
EXE = Path(sys.executable).parent / "bitmap-tui"


def hold(path: Path) -> socket.socket:
    """A raw client that takes QEMU's one monitor slot (it reads the greeting, then idles)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    assert b'"QMP"' in s.recv(4096)
    return s


async def status(address: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(EXE), "status", "--timeout", "1", "--connect", address,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_status_names_the_busy_socket(sandbox):
    holder = hold(sandbox.socket)
    try:
        code, out = await status(sandbox.address)
        assert code == 2
        (line,) = [ln for ln in out.splitlines() if "no QMP greeting" in ln]
        assert f"connected to {sandbox.socket} but no QMP greeting within 1 s" in line
        assert "another client holds it" in line
        # a full listen queue: several waiting clients, then one more
        waiting = []
        for _ in range(4):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            try:
                s.connect(str(sandbox.socket))
            except BlockingIOError:
                s.close()
                break
            waiting.append(s)
        code, out = await status(sandbox.address)
        assert code == 2
        assert f"busy: another client holds {sandbox.socket} (its queue is full)" in out
        assert "Invalid argument" not in out
        for s in waiting:
            s.close()
    finally:
        holder.close()


async def test_status_names_a_stopped_qemu(sandbox):
    """A QEMU stopped by SIGSTOP accepts the connect (the kernel does) but never greets: the line
    names that cause beside a holding client."""
    assert sandbox.proc is not None
    sandbox.proc.send_signal(signal.SIGSTOP)
    try:
        code, out = await status(sandbox.address)
    finally:
        sandbox.proc.send_signal(signal.SIGCONT)
    assert code == 2
    (line,) = [ln for ln in out.splitlines() if "no QMP greeting" in ln]
    assert f"connected to {sandbox.socket} but no QMP greeting within 1 s" in line
    assert line.endswith("or QEMU is stopped or hung")


async def test_console_fleet_retries_quietly_and_connects_when_the_holder_leaves(sandbox,
                                                                                 fleet_for):
    holder = hold(sandbox.socket)
    try:
        fleet = await fleet_for(sandbox, connect_timeout=0.5)
        conn = fleet["vm0"]
        assert conn.model.state is LinkState.FAILED
        assert f"{sandbox.socket} but no QMP greeting" in conn.model.error
        assert "another client holds it (QEMU serves one at a time)" in conn.model.error
        tries = conn.attempts
        await wait_for(lambda: conn.attempts > tries, 10, "a retry")
        assert conn.model.state is not LinkState.CONNECTED
    finally:
        holder.close()
    await wait_for(lambda: conn.model.state is LinkState.CONNECTED, 15, "connected")
