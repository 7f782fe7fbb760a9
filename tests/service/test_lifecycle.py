"""The service's life under systemd: READY=1 once it serves (Type=notify), SIGHUP reads the
config again and adds or removes VMs without dropping the clients of the VMs that stay, SIGTERM
stops it cleanly."""

from __future__ import annotations

import asyncio
import signal
import socket

from tests.kit.common import requires_qemu
from tests.kit.service import RawClient, shared_dir

pytestmark = [requires_qemu]


async def test_ready_is_sent_to_systemd(make_sandbox, serve):
    sb = await make_sandbox(drives=1)
    where = shared_dir("bitmap-tui-notify-") / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(where))
    listener.settimeout(20)
    try:
        served = serve({"vm": sb.address}, env={"NOTIFY_SOCKET": str(where)})
        await served.start()
        message = await asyncio.to_thread(listener.recv, 4096)
        assert message == b"READY=1"
        assert served.socket("vm").exists()  # ready means serving
        served.signal(signal.SIGTERM)
        assert await asyncio.to_thread(listener.recv, 4096) == b"STOPPING=1"
        assert served.proc is not None and await asyncio.to_thread(served.proc.wait, 10) == 0
        assert not served.socket("vm").exists()
    finally:
        listener.close()


async def test_sighup_adds_and_removes_vms_and_keeps_the_clients_that_stay(make_sandbox, serve):
    stays, goes, comes = [await make_sandbox(drives=1) for _ in range(3)]
    served = await serve({"stays": stays.address, "goes": goes.address}).start("stays", "goes")
    kept = await RawClient.connect(served.socket("stays"))
    await kept.negotiate()
    dropped = await RawClient.connect(served.socket("goes"))
    await dropped.negotiate()
    served.write_config({"stays": stays.address, "comes": comes.address}, operators=[],
                        viewers=[])
    served.signal(signal.SIGHUP)
    await served.wait_log("comes: connected to QEMU")
    await served.wait_log("config reloaded")
    assert await dropped.closed(10)
    assert not served.socket("goes").exists()
    assert (await kept.execute("query-status"))["return"]["status"] == "prelaunch"
    new = await RawClient.connect(served.socket("comes"))
    await new.negotiate()
    # A config with a mistake is refused; what is served stays.
    served.config.write_text("connections: [not, a, mapping]\n")
    served.signal(signal.SIGHUP)
    await served.wait_log("reload refused")
    assert (await kept.execute("query-status"))["return"]["status"] == "prelaunch"
