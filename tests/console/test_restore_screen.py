"""R on the chains screen: restore the selected point to a new file, after a confirmation."""

from __future__ import annotations

from tests.kit.chains import reference, same
from tests.kit.common import make_policy, requires_qemu, wait_for
from tests.kit.dashboard import make_app, messages, watch
from tui.core.chains.run import run_policy
from tui.core.ledger.repository import Ledger
from tui.ui.messages import RestoreFinished
from tui.ui.screens.chains import ChainsScreen
from tui.ui.screens.dialogs import ConfirmDialog

pytestmark = requires_qemu


async def test_restore_the_selected_point(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb)
    ledger = Ledger(tmp_path / "l.sqlite")
    pol = make_policy("p", {"connection": "vm0", "drives": ["drive0"], "bitmap": "bm",
                                 "target_dir": str(sb.dir)})
    refs = []
    for pattern in (0x61, 0x62):
        await sb.write(0, 0, "1M", pattern)
        await run_policy(fleet["vm0"], ledger, pol, timeout=60)
        refs.append(await reference(sb, 0, f"ref-{pattern}.qcow2"))
    app = make_app(fleet, ledger, pol)
    async with watch(app, size=(110, 30)) as pilot:
        await pilot.press("l")
        scr = app.screen
        assert isinstance(scr, ChainsScreen)
        await pilot.press("down", "R")  # the incremental: point 2
        assert isinstance(app.screen, ConfirmDialog)
        target = str(sb.dir / "restore-drive0-point-2.qcow2")
        assert target in app.screen.question and "point 2 (incremental)" in app.screen.question
        await pilot.press("y")
        await wait_for(lambda: len(messages(app).of(RestoreFinished)) == 1, timeout=60, what="restore")
        assert scr.restore_line == f"restored drive0 point 2 to {target} (checked)"
        assert same(target, refs[1]).returncode == 0
        # The full (first row), then point 2 again: its file exists now and is not overwritten.
        await pilot.press("R", "y")
        await wait_for(lambda: len(messages(app).of(RestoreFinished)) == 2, timeout=60, what="second restore")
        assert same(str(sb.dir / "restore-drive0-point-1.qcow2"), refs[0]).returncode == 0
        await pilot.press("down", "R", "y")
        await wait_for(lambda: len(messages(app).of(RestoreFinished)) == 3, timeout=60, what="refused restore")
        assert "exists and is never overwritten" in scr.restore_line
        await pilot.press("escape")

    ro = make_app(fleet, ledger, pol, read_only=True)
    async with watch(ro, size=(110, 30)) as pilot:
        await pilot.press("l", "R")
        assert isinstance(ro.screen, ChainsScreen) and not messages(ro).of(RestoreFinished)  # R is disabled
    ledger.close()
