"""The real ``bitmap-tui serve`` on real QEMUs: any QMP client works through it (qmp-shell, a
script, the commands), commands keep their ids and order, every client sees every event, every
change is audited by user before it is sent, and a QEMU that goes away takes its clients with it
and comes back."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from tests.kit.common import requires_qemu, wait_for
from tests.kit.service import EXE, QMP_SHELL, RawClient
from tui.core.base.audit import changes

pytestmark = [requires_qemu]


async def test_qmp_shell_through_the_service(make_sandbox, serve):
    sb = await make_sandbox(drives=1)
    served = await serve({"vm": sb.address}).start("vm")
    assert QMP_SHELL.exists(), "qemu.qmp installs qmp-shell"
    res = await asyncio.to_thread(
        subprocess.run, [str(QMP_SHELL), str(served.socket("vm"))], input="query-status\n",
        capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    assert '"status": "prelaunch"' in res.stdout
    assert "Connected to QEMU 7" in res.stdout  # QEMU's own version, from the upstream greeting


async def test_ids_kept_order_kept_events_to_every_client(make_sandbox, serve):
    sb = await make_sandbox(drives=1)
    served = await serve({"vm": sb.address}).start("vm")
    one, two = [await RawClient.connect(served.socket("vm")) for _ in range(2)]
    greeting = await one.negotiate()
    await two.negotiate()
    assert greeting["QMP"]["capabilities"] == []
    assert greeting["QMP"]["version"]["qemu"]["major"] >= 7
    assert greeting["QMP"]["bitmap-tui"]["role"] == "operator"
    # Three commands in one write, no newline between them (as qemu.qmp sends), odd ids.
    await one.send(b'{"execute":"query-status","id":[1,{"a":null}]}{"execute":"query-name"}'
                   b'{"execute":"block-dirty-bitmap-add","arguments":{"node":"nope","name":"b"},'
                   b'"id":"three"}')
    first, second, third = [await one.message() for _ in range(3)]
    assert first == {"return": {"status": "prelaunch", "singlestep": False, "running": False},
                     "id": [1, {"a": None}]}
    assert second == {"return": {}}
    assert third["id"] == "three" and third["error"]["class"] == "GenericError"
    # Another client's command: its reply goes to it alone; the event to both.
    await two.send({"execute": "cont", "id": 7})
    got = [await two.message() for _ in range(2)]  # QEMU sends the event before the reply
    assert {"return": {}, "id": 7} in got
    assert [m["event"] for m in got if "event" in m] == ["RESUME"]
    assert (await one.message())["event"] == "RESUME"
    # Nothing else reached client one (two's reply was not sent to it).
    assert (await one.execute("query-status", msg_id="after"))["id"] == "after"


async def test_status_and_backup_commands_go_through_the_service(make_sandbox, serve, tmp_path):
    sb = await make_sandbox(drives=1)
    await sb.add_bitmap(0, "bm0")
    served = await serve({"vm": sb.address}).start("vm")
    # A client holds the service socket (as an open console would); QEMU's own socket is
    # the service's. The command gets through anyway.
    holder = await RawClient.connect(served.socket("vm"))
    await holder.negotiate()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"),
           "XDG_CONFIG_HOME": str(tmp_path / "nocfg")}
    res = await asyncio.to_thread(
        subprocess.run, [str(EXE), "status", "--config", str(served.config), "--json"],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert '"bm0"' in res.stdout and '"service_role": "operator"' in res.stdout
    direct = await asyncio.to_thread(
        subprocess.run, [str(EXE), "status", "--config", str(served.config), "--direct",
                         "--timeout", "1"],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert direct.returncode == 2 and "another client holds it" in direct.stdout  # QEMU's socket is the service's


async def test_every_change_is_audited_with_its_user_before_it_is_sent(make_sandbox, serve):
    sb = await make_sandbox(drives=1)
    served = await serve({"vm": sb.address}).start("vm")
    client = await RawClient.connect(served.socket("vm"))
    await client.negotiate()
    reply = await client.execute("block-dirty-bitmap-add", {"node": "disk0", "name": "made"})
    assert reply == {"return": {}, "id": "t"}
    await client.execute("query-status")
    made = [c for c in changes(served.audit_path) if c["command"] == "block-dirty-bitmap-add"]
    assert len(made) == 1 and made[0]["outcome"] and made[0]["error"] is None
    assert (made[0]["user"], made[0]["uid"]) == ("root", 0) and made[0]["pid"] == os.getpid()
    assert all(c["command"] != "query-status" for c in changes(served.audit_path))


async def test_a_change_that_cannot_be_audited_is_not_sent(make_sandbox, serve):
    sb = await make_sandbox(drives=1)
    # /dev/full opens, and every write to it fails (ENOSPC).
    served = await serve({"vm": sb.address}, audit_log="/dev/full").start("vm")
    client = await RawClient.connect(served.socket("vm"))
    await client.negotiate()
    reply = await client.execute("block-dirty-bitmap-add", {"node": "disk0", "name": "unrecorded"})
    assert reply["error"]["class"] == "GenericError"
    assert "audit log" in reply["error"]["desc"] and "not sent" in reply["error"]["desc"]
    nodes = await sb.qmp("query-named-block-nodes")
    assert not [b for n in nodes for b in n.get("dirty-bitmaps", [])]
    assert (await client.execute("query-status"))["return"]["status"] == "prelaunch"


async def test_qemu_killed_under_three_clients_and_back(make_sandbox, serve, fleet_for):
    sb = await make_sandbox(drives=1)
    other = await make_sandbox(drives=1)
    served = await serve({"vm": sb.address, "other": other.address}).start("vm", "other")
    clients = [await RawClient.connect(served.socket("vm")) for _ in range(3)]
    for client in clients:
        await client.negotiate()
    bystander = await RawClient.connect(served.socket("other"))
    await bystander.negotiate()
    console = await fleet_for(f"unix:{served.socket('vm')}")
    assert console.store.connection("vm0").via_service
    sb.kill()
    for client in clients:
        assert await client.closed(10)
    # Refused until QEMU is back: accepted and closed with no greeting.
    await served.wait_log("vm: lost QEMU")
    late = await RawClient.connect(served.socket("vm"))
    with pytest.raises(EOFError):
        await late.message()
    # The other VM is untouched.
    assert (await bystander.execute("query-status"))["return"]["status"] == "prelaunch"
    await sb.start()
    await served.wait_log("vm: connected to QEMU", count=2)
    again = await RawClient.connect(served.socket("vm"))
    await again.negotiate()
    assert (await again.execute("query-status"))["return"]["status"] == "prelaunch"
    # A client that reconnects (the console's Connection) is back by itself.
    await wait_for(lambda: console.store.connection("vm0").state.value == "connected", 20,
                   "the console's connection back through the service")
