"""Read-only holds on every path: every subcommand and the console's screens, run read-only by
``--read-only`` or by the config's ``defaults.read_only: true``, behind a proxy that records
every command sent to a real QEMU. Nothing but queries may pass, and no file may vanish."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.kit.common import requires_qemu
from tests.kit.qmp_recorder import RecordingProxy
from tests.kit.terminal import Tmux
from tui.core.base.paths import default_ledger_path
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import JobState
from tui.core.txn import Transaction, dumps
from tui.core.txn.model import Action

pytestmark = requires_qemu
EXE = Path(sys.executable).parent / "bitmap-tui"
HAVE_TMUX = shutil.which("tmux") is not None


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and not p.is_socket()}


def ledger_with_problems(path: Path, image: Path) -> str:
    """vm/drive0 (node disk0) with one failed (INVALID, deletable) full image on disk; returns
    the name of a bitmap of this ledger that no chain uses (its fix would remove it)."""
    image.write_bytes(b"not really an image")
    with Ledger(path) as led:
        retired = led.chain_bitmap("old", 0)
        txn = led.new_txn("vm", "p", "individual")
        iid = led.add_image(txn_id=txn, connection="vm", policy="p", drive="drive0",
                            node="disk0", bitmap="bm", path=str(image), kind="full",
                            parent_id=None, job_id=f"j{txn}", source_file=None, source_size=None)
        led.set_file_identity(iid, os.stat(image))  # the file this ledger created
        led.mark_sending(txn, [iid])
        led.mark_sent(txn)
        led.record_job("vm", f"j{txn}", JobState.FAILED, "boom")
        led.settle(txn)
    return retired


def config(path: Path, proxy: RecordingProxy, backups: Path, *, read_only: bool) -> Path:
    path.write_text(
        ("defaults:\n  read_only: true\n" if read_only else "")
        + f"connections:\n  vm: {proxy.address}\n"
        + "policies:\n  p:\n    connection: vm\n    drives: [drive0]\n    bitmap: bm\n"
        + f"    target_dir: {backups}\n    format: qcow2\n"
    )
    return path


async def run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(EXE), *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def drive_console(argv: list[str], keys: list[str], ready: str) -> None:
    t = Tmux(argv, width=120, height=36)
    t.start()
    try:
        await t.wait_screen(ready, timeout=60)
        for key in keys:
            t.keys(key)
            await asyncio.sleep(0.3)
        t.keys("q")
        await asyncio.sleep(0.5)
    finally:
        t.stop()


@pytest.mark.parametrize("how", ["flag", "config"])
async def test_read_only_sends_only_queries_and_deletes_nothing(make_sandbox, tmp_path, how):
    sb = await make_sandbox(drives=1)
    await sb.add_bitmap(0, "stray")  # another tool's: never offered for removal
    await sb.write(0, 0, "1M")
    proxy = await RecordingProxy(tmp_path / "proxy.sock", sb.socket).start()
    backups = tmp_path / "backups"
    backups.mkdir()
    ledger = default_ledger_path()  # the console's chains screen uses the default ledger
    ledger.parent.mkdir(parents=True, exist_ok=True)
    retired = ledger_with_problems(ledger, backups / "drive0-full-1.qcow2")
    await sb.add_bitmap(0, retired)  # ours, retired: its fix would remove it
    cfg = config(tmp_path / "config.yaml", proxy, backups, read_only=how == "config")
    txn = tmp_path / "txn.yaml"
    txn.write_text(dumps(Transaction((
        Action("block-dirty-bitmap-add", {"node": "disk0", "name": "new"}),), "individual")))
    common = ["--config", str(cfg), "--ledger", str(ledger)]
    flag = ["--read-only"] if how == "flag" else []
    before = files_under(tmp_path) | files_under(ledger.parent)
    try:
        code, out = await run("chains", *common, *flag)
        assert code == 0 and "problem 1 [invalid-images]" in out and "[retired]" in out, out
        runs = [
            ["status", "--config", str(cfg), *flag],
            ["chains", *common, *flag],
            ["chains", *common, "--fix", "1", "--yes", *flag],
            ["chains", *common, "--fix", "2", "--yes", *flag],
            ["backup", "p", *common, *flag],
            ["backup", "p", "--plan", *common, *flag],
            ["verify", *common, *flag],
            ["apply", str(txn), "--config", str(cfg), "--connect", proxy.address, "--yes", *flag],
        ]
        for argv in runs:
            code, out = await run(*argv)
            assert "Traceback" not in out, (argv, out)
            assert proxy.mutating() == [], (argv, out)
        if HAVE_TMUX:
            sessions = proxy.commands.count("qmp_capabilities")
            # the dashboard: add, clear, disable, enable, merge, delete; the chains screen:
            # fix (delete, remove), run policy, each confirmed with enter
            await drive_console([str(EXE), "--config", str(cfg), *flag],
                                ["n", "Enter", "x", "Enter", "d", "e", "m", "Enter",
                                 "Down", "Down", "x", "Enter", "c", "Enter",
                                 "l", "x", "Enter", "Down", "x", "Enter", "r", "Enter", "Escape"],
                                "stray")
            assert proxy.mutating() == []
            await drive_console([str(EXE), "compose", str(txn), "--config", str(cfg), "--connect",
                                 proxy.address, *flag], ["s", "Enter", "y"], "block-dirty")
            assert proxy.mutating() == []
            assert proxy.commands.count("qmp_capabilities") >= sessions + 2, "both consoles ran"
    finally:
        await proxy.stop()
    after = files_under(tmp_path) | files_under(ledger.parent)
    assert before - after == set(), "a read-only run deleted a file"
    nodes = await sb.qmp("query-named-block-nodes", {"flat": True})
    names = {b["name"] for n in nodes for b in n.get("dirty-bitmaps", [])}
    assert names == {"stray", retired}


@pytest.mark.skipif(not HAVE_TMUX, reason="tmux not installed")
@pytest.mark.parametrize("how", ["flag", "config"])
async def test_read_only_demo_offers_no_change(tmp_path, how):
    """The demo builds its own QEMU (no proxy can sit in front): read-only shows as a console
    whose mutating keys do nothing and whose audit log stays unwritten."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("defaults:\n  read_only: true\n" if how == "config" else "")
    flag = ["--read-only"] if how == "flag" else []
    t = Tmux([str(EXE), "demo", "--config", str(cfg), *flag], width=120, height=36)
    t.start()
    try:
        await t.wait_screen("connected", timeout=60)
        t.keys("n")
        await asyncio.sleep(1)
        assert "New bitmap on" not in t.screen()
    finally:
        t.stop()


async def test_a_writable_chains_fix_deletes_through_the_audit_log(make_sandbox, tmp_path):
    """The same deletion without read-only: made, and recorded (intent and outcome)."""
    from tui.core.base.audit import changes

    sb = await make_sandbox(drives=1)
    proxy = await RecordingProxy(tmp_path / "proxy.sock", sb.socket).start()
    backups = tmp_path / "backups"
    backups.mkdir()
    image = backups / "drive0-full-1.qcow2"
    ledger = tmp_path / "ledger.db"
    ledger_with_problems(ledger, image)
    cfg = config(tmp_path / "config.yaml", proxy, backups, read_only=False)
    audit = tmp_path / "audit.jsonl"
    try:
        code, out = await run("chains", "--config", str(cfg), "--ledger", str(ledger),
                              "--audit-log", str(audit), "--fix", "1", "--yes")
    finally:
        await proxy.stop()
    assert code == 0, out
    assert not image.exists()
    (entry,) = [e for e in changes(audit) if e["command"] == "unlink"]
    assert entry["arguments"] == {"path": str(image)} and entry["outcome"]
