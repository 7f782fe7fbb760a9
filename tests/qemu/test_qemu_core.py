"""The QMP core against a real QEMU: connect, nodes, bitmap states, jobs, events, reconnect."""

from __future__ import annotations

import pytest

from tests.kit.common import connected, requires_qemu, wait_for
from tui.core.base.errors import QMPCommandError
from tui.core.model.state import BitmapState, JobResult, LinkState

pytestmark = requires_qemu


def bitmap(fleet, node, name, conn="vm0"):
    n = fleet.store.connection(conn).nodes[node]
    return n.bitmap(name)


async def test_connect_probe_and_nodes(sandbox, fleet_for):
    fleet = await fleet_for(sandbox)
    model = fleet.store.connection("vm0")
    assert model.state is LinkState.CONNECTED
    assert model.version is not None and model.version.major >= 7
    assert "block-dirty-bitmap-merge" in model.commands and "query-jobs" in model.commands
    assert list(model.nodes) == ["disk0", "disk1"] or set(model.nodes) == {"disk0", "disk1"}
    d0 = model.nodes["disk0"]
    assert d0.device == "drive0" and d0.driver == "qcow2" and d0.size == 64 * 2**20
    assert d0.file.endswith("drive0.qcow2")


async def test_bitmap_active_count_grows_and_disabled(sandbox, fleet_for):
    fleet = await fleet_for(sandbox)
    conn = fleet["vm0"]
    await conn.execute("block-dirty-bitmap-add", {"node": "disk0", "name": "bm0"})
    await conn.execute("block-dirty-bitmap-add", {"node": "disk0", "name": "off", "disabled": True})
    bm = bitmap(fleet, "disk0", "bm0")
    assert bm.state is BitmapState.ACTIVE and bm.count == 0 and bm.granularity == 65536
    assert bitmap(fleet, "disk0", "off").state is BitmapState.DISABLED
    await sandbox.write(0, 0, "1M")
    await conn.refresh()
    assert bitmap(fleet, "disk0", "bm0").count == 2**20
    assert bitmap(fleet, "disk0", "off").count == 0


async def test_frozen_during_backup_and_job_progress(sandbox, fleet_for):
    fleet = await fleet_for(sandbox, job_poll_interval=0.1)
    conn = fleet["vm0"]
    await conn.execute("block-dirty-bitmap-add", {"node": "disk0", "name": "bm0"})
    await sandbox.write(0, 0, "8M")
    await sandbox.qmp("blockdev-add", {"driver": "null-co", "node-name": "tgt", "size": 64 * 2**20})
    await conn.execute(
        "blockdev-backup",
        {"job-id": "j0", "device": "disk0", "target": "tgt", "sync": "incremental",
         "bitmap": "bm0", "speed": 1 << 20},
    )
    assert bitmap(fleet, "disk0", "bm0").state is BitmapState.FROZEN
    with pytest.raises(QMPCommandError) as err:
        await conn.execute("block-dirty-bitmap-clear", {"node": "disk0", "name": "bm0"})
    assert "in use" in err.value.desc
    await wait_for(lambda: fleet.store.connection("vm0").jobs["j0"].current > 0, what="progress")
    job = fleet.store.connection("vm0").jobs["j0"]
    assert 0 < job.current < job.total == 8 * 2**20
    await conn.execute("block-job-set-speed", {"device": "j0", "speed": 0})
    await wait_for(lambda: fleet.store.connection("vm0").jobs["j0"].result is JobResult.COMPLETED,
                   what="completion event")
    await wait_for(lambda: bitmap(fleet, "disk0", "bm0").state is BitmapState.ACTIVE, what="refresh")
    assert bitmap(fleet, "disk0", "bm0").count == 0
    names = [e.name for e in fleet.store.events]
    assert "BLOCK_JOB_COMPLETED" in names and "JOB_STATUS_CHANGE" in names


async def test_killed_qemu_disconnects_and_restart_reconnects(sandbox, fleet_for):
    fleet = await fleet_for(sandbox)
    sandbox.kill()
    await wait_for(lambda: fleet.store.connection("vm0").state is LinkState.DISCONNECTED,
                   what="disconnect")
    assert "connection lost" in (fleet.store.connection("vm0").error or "")
    await sandbox.start()
    await wait_for(lambda: connected(fleet), what="reconnect")
    await wait_for(lambda: "disk0" in fleet.store.connection("vm0").nodes, what="resync")


async def test_blkdebug_drive_shows_its_image_path(make_sandbox, fleet_for):
    sb = await make_sandbox(drives=2, failing=[1])
    fleet = await fleet_for(sb)
    d1 = fleet.store.connection("vm0").nodes["disk1"]
    assert d1.file == str(sb.image(1)) and d1.device == "drive1"


@requires_qemu
async def test_sandbox_qemu_dies_with_a_sigkilled_parent(tmp_path):
    """A demo QEMU must not outlive an app killed with SIGKILL (no cleanup code runs then)."""
    import asyncio
    import signal
    import sys

    code = (
        "import asyncio, sys\n"
        "from tui.demo.sandbox import Sandbox\n"
        "async def main():\n"
        f"    sb = await Sandbox(drives=1, workdir={str(tmp_path / 'sb')!r}).start()\n"
        "    print(sb.proc.pid, flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    qemu_pid = int((await asyncio.wait_for(proc.stdout.readline(), 60)).decode())
    proc.send_signal(signal.SIGKILL)
    await proc.wait()

    def alive() -> bool:
        try:
            with open(f"/proc/{qemu_pid}/stat") as f:
                return f.read().split()[2] != "Z"
        except FileNotFoundError:
            return False

    await wait_for(lambda: not alive(), 10, "the orphaned QEMU to die")
