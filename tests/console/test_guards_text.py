"""Everything shown is made safe once: control characters escaped, long values cut, in the
headless commands' text output, their error lines and the console (real QEMU, real tmux)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.kit.common import requires_qemu
from tests.kit.terminal import Tmux
from tui.core.base.text import ELLIPSIS, is_plain, shown
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import JobState

EXE = Path(sys.executable).parent / "bitmap-tui"
# Retitles the terminal (OSC 0 ... BEL) and wipes the screen (CSI 2J): QEMU accepts it as a name.
EVIL = "\x1b]0;PWNED\x07\x1b[2J"
EVIL_SHOWN = "\\x1b]0;PWNED\\x07\\x1b[2J"


def test_shown_escapes_c0_c1_esc_del_and_cuts_long_values():
    assert shown(EVIL) == EVIL_SHOWN
    assert shown("a\x00b\nc\x7fd\x9be\u202ef") == "a\\x00b\\x0ac\\x7fd\\x9be\\u202ef"
    assert shown("plain name-1 ünïcode") == "plain name-1 ünïcode"
    assert shown("x" * 300, limit=10) == "x" * 10 + f"{ELLIPSIS}(300 chars)"
    assert is_plain("bm0") and not is_plain(EVIL)


async def run(*argv: str, timeout: float = 60) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        str(EXE), *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out, err


def no_control(data: bytes) -> None:
    text = data.decode()
    bad = {hex(ord(c)) for c in text if (ord(c) < 0x20 and c != "\n") or 0x7f <= ord(c) < 0xa0}
    assert not bad, f"control characters reached the output: {bad}"


@requires_qemu
async def test_status_text_escapes_a_hostile_bitmap_name_and_json_keeps_it(sandbox):
    await sandbox.add_bitmap(0, EVIL)
    code, out, err = await run("status", "--connect", sandbox.address)
    assert code == 0, err
    no_control(out)
    no_control(err)
    assert EVIL_SHOWN in out.decode()
    code, out, _ = await run("status", "--json", "--connect", sandbox.address)
    names = [b["name"] for c in json.loads(out)["connections"] for n in c["nodes"]
             for b in n["bitmaps"]]
    assert EVIL in names, "JSON output stays exact"


def ledger_with_hostile_names(path: Path, tmp: Path) -> None:
    with Ledger(path) as led:
        txn = led.new_txn("vm", "p", "individual")
        iid = led.add_image(txn_id=txn, connection="vm", policy="p", drive="d" + EVIL,
                            node="n0", bitmap=EVIL, path=str(tmp / f"img{EVIL}.qcow2"),
                            kind="full", parent_id=None, job_id=f"j{txn}", source_file=None,
                            source_size=None)
        led.mark_sending(txn, [iid])
        led.mark_sent(txn)
        led.record_job("vm", f"j{txn}", JobState.FAILED, "boom" + EVIL)
        led.settle(txn)


async def test_chains_text_escapes_hostile_names(tmp_path):
    ledger = tmp_path / "ledger.db"
    ledger_with_hostile_names(ledger, tmp_path)
    code, out, err = await run("chains", "--ledger", str(ledger))
    assert code == 0, err
    no_control(out)
    assert EVIL_SHOWN in out.decode()
    code, out, _ = await run("chains", "--json", "--ledger", str(ledger))
    assert json.loads(out)["drives"][0]["bitmap"] == EVIL, "JSON output stays exact"


async def test_error_lines_escape_addresses_and_cut_a_900kb_theme_name(tmp_path):
    code, out, err = await run("status", "--connect", f"/nonexistent{EVIL}.sock")
    assert code == 2
    no_control(out + err)
    assert EVIL_SHOWN in (out + err).decode()
    code, out, err = await run("status", "--connect", f"bogus:{EVIL}")
    no_control(out + err)
    assert EVIL_SHOWN in (out + err).decode()
    config = tmp_path / "c.yaml"
    # 900 KB: under the file size limit (a 50 MB file is refused before it is parsed).
    config.write_text("defaults:\n  theme: " + "t" * (900 * 1024) + "\n")
    code, out, err = await run("--config", str(config), timeout=120)
    assert code == 2 and out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 3000, f"{len(err)} bytes of error"
    assert "chars)" in lines[0]


@requires_qemu
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
async def test_console_shows_the_hostile_name_escaped_and_keeps_the_pane_title(sandbox):
    await sandbox.add_bitmap(0, EVIL)
    t = Tmux([str(EXE), "--connect", sandbox.address], width=120, height=30)
    t.start()
    try:
        title = t.tmux("display-message", "-p", "-t", "t", "#{pane_title}")
        await t.wait_screen("PWNED", "disk0")
        screen = await t.wait_screen("\\x1b]0;PWNED")
        assert "disk0" in screen, "the screen was not wiped"
        await asyncio.sleep(0.5)
        assert "PWNED" not in t.tmux("display-message", "-p", "-t", "t", "#{pane_title}")
        assert t.tmux("display-message", "-p", "-t", "t", "#{pane_title}") == title
    finally:
        t.stop()
