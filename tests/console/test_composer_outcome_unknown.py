"""The composer when a transaction's reply is lost (a proxy in front of a real QEMU forwards the
``transaction`` and drops the link instead of its reply): OUTCOME UNKNOWN with what to check, never
REFUSED; when the link comes back, the jobs are followed to their real verdict."""

from __future__ import annotations

from typing import Any

import yaml
from textual.app import App

from tests.kit.common import requires_qemu, wait_for
from tests.kit.dashboard import screen_text
from tests.kit.qmp_recorder import RecordingProxy
from tui.core.txn import load
from tui.session import ConsoleContext
from tui.ui.screens.composer import ComposerScreen

pytestmark = requires_qemu


class Host(App[None]):
    def __init__(self, fleet: Any, txn: Any) -> None:
        super().__init__()
        self.fleet = fleet
        self.txn = txn

    def on_mount(self) -> None:
        self.push_screen(ComposerScreen(ConsoleContext.of_fleet(self.fleet), "vm0", self.txn))


async def test_composer_says_outcome_unknown_then_follows_the_jobs(make_sandbox, fleet_for,
                                                                   tmp_path):
    sb = await make_sandbox(drives=1)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"actions": [{"type": "drive-backup", "data": {
        "device": "drive0", "job-id": "drive0", "sync": "full", "format": "qcow2",
        "mode": "absolute-paths", "target": str(sb.path("full.qcow2")),
        "speed": 16 * 1024 * 1024}}]}))
    sock = tmp_path / "p.sock"
    proxy = await RecordingProxy(sock, sb.socket, drop_reply_to="transaction").start()
    fleet = await fleet_for(f"unix:{sock}", reconnect=True)
    app = Host(fleet, load(path))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, ComposerScreen)
        await pilot.press("s")
        await wait_for(proxy.dropped.is_set, 30, "the dropped reply")
        await proxy.stop()  # the link stays down for now
        sock.unlink()
        await wait_for(lambda: "OUTCOME UNKNOWN" in screen_text(app), 30, "outcome unknown")
        text = screen_text(app)
        assert "REFUSED" not in text and "query-jobs" in text
        back = await RecordingProxy(sock, sb.socket).start()  # the link comes back
        try:
            await wait_for(lambda: screen.verdict is not None, 60, "the verdict")
            assert screen.verdict is not None and screen.verdict.accepted is True
            assert [(j.job_id, j.result) for j in screen.verdict.jobs] == [("drive0", "completed")]
            assert back.commands.count("transaction") == 0, "never sent twice"
        finally:
            await back.stop()
