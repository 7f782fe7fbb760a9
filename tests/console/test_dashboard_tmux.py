"""The installed ``bitmap-tui`` in a real terminal (tmux, 80x24) against a real QEMU: the screen
shows node names, bitmap names and state words; a bitmap added from the keyboard appears."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.kit.common import requires_qemu
from tests.kit.terminal import Tmux

pytestmark = [
    requires_qemu,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed"),
]

EXE = Path(sys.executable).parent / "bitmap-tui"


async def test_installed_console_in_tmux(make_sandbox):
    assert EXE.exists(), "the console script is installed in the test environment"
    sb = await make_sandbox(drives=2)
    await sb.add_bitmap(0, "bm-live")
    await sb.add_bitmap(0, "bm-off", disabled=True)
    await sb.add_bitmap(1, "bm-held")
    await sb.write(0, 0, "2M")
    await sb.write(1, 0, "4M")
    # A slow backup holds bm-held: frozen while it runs.
    await sb.qmp("blockdev-add", {"driver": "null-co", "node-name": "tgt", "size": 64 << 20})
    await sb.qmp("blockdev-backup", {"job-id": "hold", "device": "disk1", "target": "tgt",
                                     "sync": "incremental", "bitmap": "bm-held", "speed": 4096})
    term = Tmux([str(EXE), "--connect", f"vm={sb.address}"])
    term.start()
    try:
        text = await term.wait_screen("disk0", "disk1", "bm-live", "bm-off", "bm-held",
                                      "active", "disabled", "frozen", "connected", "running")
        lines = text.splitlines()
        assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
        assert any("bm-off" in line and "disabled" in line for line in lines)
        assert any("bm-held" in line and "frozen" in line for line in lines)
        assert any("hold" in line and "running" in line for line in lines)
        # Add a bitmap from the keyboard: the cursor starts on the first node (disk0).
        term.keys("n")
        await term.wait_screen("New bitmap on disk0")
        term.literal("kbd-made")
        term.keys("Enter")
        # The new row, with its state word (the dialog's input also shows the name until then).
        await term.wait_screen("kbd-made", "active", "64 KiB", line=True)
        nodes = await sb.qmp("query-named-block-nodes")
        names = {b.get("name") for n in nodes if n["node-name"] == "disk0"
                 for b in n.get("dirty-bitmaps", [])}
        assert "kbd-made" in names
        term.keys("q")
    finally:
        term.stop()



async def test_installed_console_read_only_offers_and_sends_nothing(make_sandbox, tmp_path):
    sb = await make_sandbox(drives=1)
    await sb.add_bitmap(0, "keepme")
    await sb.write(0, 0, "1M")
    term = Tmux(["env", f"XDG_CONFIG_HOME={tmp_path}", str(EXE), "--read-only",
                 "--connect", f"vm={sb.address}"])
    term.start()
    try:
        text = await term.wait_screen("keepme", "active", "1 MiB", line=True)
        footer = text.rstrip().splitlines()[-1]
        assert "Filter" in footer and "Clear" not in footer and "Add" not in footer
        term.keys("Down")  # onto the bitmap row
        for key in ("x", "r", "n", "d"):
            term.keys(key)
        term.keys("?")
        help_text = await term.wait_screen("Keys (esc to close)")
        assert "Clear" not in help_text and "Remove" not in help_text
        term.keys("Escape")
        nodes = await sb.qmp("query-named-block-nodes")
        bms = [b for n in nodes if n["node-name"] == "disk0" for b in n.get("dirty-bitmaps", [])]
        assert [(b["name"], b["count"], b["recording"]) for b in bms] == [("keepme", 1 << 20, True)]
        term.keys("q")
    finally:
        term.stop()
