"""Rights by peer credentials, with real unix users: an operator may change things, a viewer
may only query (its console opens read-only; a change it sends is refused by the service and
never reaches QEMU), a stranger is refused at connect."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys

import pytest

from tests.kit.common import requires_qemu
from tests.kit.service import EXE, shared_dir
from tests.kit.terminal import Tmux
from tui.core.base.audit import changes

pytestmark = [requires_qemu]

# A script's QMP session: the greeting, then each command given, one JSON line per message read.
SCRIPT = r"""
import json, socket, sys
sock = socket.socket(socket.AF_UNIX); sock.connect(sys.argv[1]); f = sock.makefile("rb")
print(f.readline().decode().strip(), flush=True)
for cmd in sys.argv[2:]:
    sock.sendall(cmd.encode())
    print(f.readline().decode().strip(), flush=True)
"""
CLEAR = json.dumps({"execute": "block-dirty-bitmap-clear", "id": 1,
                    "arguments": {"node": "disk0", "name": "bm0"}})
CAPS = json.dumps({"execute": "qmp_capabilities"})


def script_as(users, user, socket, *commands):
    res = users.run_as(user, [sys.executable, "-c", SCRIPT, str(socket), *commands])
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()], res


async def dirty(sb) -> int:
    nodes = await sb.qmp("query-named-block-nodes")
    return sum(b["count"] for n in nodes for b in n.get("dirty-bitmaps", []) if b.get("name"))


async def test_operator_viewer_and_stranger(make_sandbox, serve, users):
    sb = await make_sandbox(drives=1)
    await sb.add_bitmap(0, "bm0")
    await sb.write(0, 0, "1M")
    served = await serve({"vm": sb.address}, operators=[users.group],
                         viewers=[f"user:{users.viewer}"]).start("vm")
    sock = served.socket("vm")
    # The viewer: queries pass, the clear is refused by the service and nothing reaches QEMU.
    out, _ = await asyncio.to_thread(script_as, users, users.viewer, sock, CAPS,
                                     json.dumps({"execute": "query-status", "id": 2}), CLEAR)
    assert out[0]["QMP"]["bitmap-tui"] == {"role": "viewer", "user": users.viewer}
    assert out[2]["return"]["status"] == "prelaunch"
    assert out[3]["id"] == 1 and out[3]["error"]["class"] == "GenericError"
    assert out[3]["error"]["desc"].startswith(f"bitmap-tui service: user {users.viewer} may only query")
    assert await dirty(sb) == 1 << 20
    assert not changes(served.audit_path)
    # The stranger: one QMP error at connect, then closed.
    out, _ = await asyncio.to_thread(script_as, users, users.stranger, sock, CAPS)
    assert out[0]["error"]["desc"].startswith(f"bitmap-tui service: user {users.stranger} may not use vm")
    assert len(out) == 1
    # The operator (by its group): the clear is sent, and audited with its user.
    out, _ = await asyncio.to_thread(script_as, users, users.operator, sock, CAPS, CLEAR)
    assert out[0]["QMP"]["bitmap-tui"]["role"] == "operator"
    assert out[2] == {"return": {}, "id": 1}
    assert await dirty(sb) == 0
    (entry,) = changes(served.audit_path)
    assert (entry["user"], entry["uid"], entry["command"]) == (
        users.operator, users.uid(users.operator), "block-dirty-bitmap-clear")


async def test_a_stranger_s_command_says_why_in_one_line(make_sandbox, serve, users):
    sb = await make_sandbox(drives=1)
    served = await serve({"vm": sb.address}).start("vm")
    res = await asyncio.to_thread(users.run_as, users.stranger,
                                  [str(EXE), "status", "--config", str(served.config)])
    assert res.returncode == 2
    assert f"user {users.stranger} may not use vm" in res.stdout
    assert "Traceback" not in res.stderr + res.stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
async def test_a_viewer_s_console_is_read_only(make_sandbox, serve, users):
    sb = await make_sandbox(drives=1)
    await sb.add_bitmap(0, "keepme")
    await sb.write(0, 0, "1M")
    served = await serve({"vm": sb.address}, viewers=[users.viewer]).start("vm")
    home = shared_dir("bitmap-tui-viewer-")
    os.chown(home, users.uid(users.viewer), -1)
    term = Tmux(["runuser", "-u", users.viewer, "-g", users.viewer, "--", "env",
                 f"HOME={home}", f"XDG_CONFIG_HOME={home}", f"XDG_STATE_HOME={home}",
                 str(EXE), "--config", str(served.config)])
    term.start()
    try:
        text = await term.wait_screen("keepme", "active", "1 MiB", line=True)
        await term.wait_screen("via service (viewer)")
        footer = text.rstrip().splitlines()[-1]
        assert "Filter" in footer and "Clear" not in footer and "Add" not in footer
        term.keys("Down")
        for key in ("x", "r", "n", "d"):
            term.keys(key)
        term.keys("q")
    finally:
        term.stop()
        shutil.rmtree(home, ignore_errors=True)
    assert await dirty(sb) == 1 << 20
    assert not changes(served.audit_path)
