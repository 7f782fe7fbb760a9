"""A schedule under the real ``bitmap-tui serve``: the service runs the policy at its times as a
client of its own socket, while a console-like client stays connected to the same VM and sees
the backup's job events; every point the schedule made restores equal to the disk."""

from __future__ import annotations

from tests.kit.chains import reference, same
from tests.kit.common import requires_qemu, wait_for
from tui.core.base.paths import default_ledger_path
from tui.core.chains.points import list_points
from tui.core.chains.restore import restore_local
from tui.core.ledger.points_repository import PointsLedger

pytestmark = requires_qemu


def valid_points(ledger_path) -> list:
    if not ledger_path.exists():
        return []
    with PointsLedger(ledger_path) as ledger:
        return [p for p in list_points(ledger, drive="drive0") if p.restorable]


async def test_serve_runs_a_schedule_beside_a_connected_client(make_sandbox, serve, fleet_for,
                                                               tmp_path):
    sb = await make_sandbox(drives=1)
    await sb.write(0, 0, "1M")
    policy = {"connection": "vm", "drives": ["drive0"], "bitmap": "nightly",
              "target_dir": str(sb.dir), "schedule": "* * * * * */3"}  # every 3 s (croniter)
    served = await serve({"vm": sb.address}, extra={"policies": {"nightly": policy}}).start("vm")
    # A client that stays connected through the service the whole time (a console would).
    watcher = await fleet_for(str(served.socket("vm")))
    ledger_path = default_ledger_path()  # the test's own state directory, as the service's
    await wait_for(lambda: len(valid_points(ledger_path)) >= 2, timeout=90,
                   what="two scheduled runs through the service")
    await served.wait_log("scheduled policy")
    # The scheduled backup's job, seen live by the other client through the same service.
    seen = {r.name for r in watcher.store.events}
    assert {"JOB_STATUS_CHANGE", "BLOCK_JOB_COMPLETED"} <= seen, seen
    newest = max(valid_points(ledger_path), key=lambda p: p.point)
    ref = await reference(sb, 0, "ref.qcow2")
    out = str(tmp_path / "restored.qcow2")
    with PointsLedger(ledger_path) as ledger:
        restore_local(ledger, newest, out, "qcow2")
    assert same(out, ref).returncode == 0
