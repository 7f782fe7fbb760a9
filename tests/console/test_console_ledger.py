"""The console reads the session's ledger: started with ``--ledger FILE`` (in a real terminal,
against a real QEMU), its chains screen shows that ledger's chains and not the default one's."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.kit.common import requires_qemu
from tests.kit.terminal import Tmux
from tui.core.base.paths import default_ledger_path
from tui.core.ledger.repository import Ledger

pytestmark = [
    requires_qemu,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed"),
]

EXE = Path(sys.executable).parent / "bitmap-tui"


def ledger_with_image(path: Path, image: str) -> None:
    """A ledger holding one full backup of the connection ``vm``'s drive0 at ``image``."""
    with Ledger(path) as ledger:
        txn = ledger.new_txn("vm", "nightly", "individual")
        ledger.add_image(txn_id=txn, connection="vm", policy="nightly", drive="drive0",
                         node="disk0", bitmap="nightly", path=image, kind="full",
                         parent_id=None, job_id="drive0-full-1", source_file=None,
                         source_size=None)


async def test_console_started_with_a_ledger_shows_that_ledgers_chains(make_sandbox, tmp_path):
    sb = await make_sandbox(drives=1)
    team = tmp_path / "team-ledger.sqlite"
    ledger_with_image(team, "/backups/team/drive0-full-team.qcow2")
    # The default ledger (the test's own state directory) holds another chain: not shown.
    default = default_ledger_path()
    ledger_with_image(default, "/backups/mine/drive0-full-default.qcow2")
    term = Tmux([str(EXE), "--connect", f"vm={sb.address}", "--ledger", str(team),
                 "--audit-log", str(tmp_path / "audit.jsonl")], width=120, height=40)
    term.start()
    try:
        await term.wait_screen("disk0", "connected")
        term.keys("l")
        text = await term.wait_screen("drive0-full-team.qcow2")
        assert "drive0-full-default" not in text
        term.keys("Escape")
        term.keys("q")
    finally:
        term.stop()
