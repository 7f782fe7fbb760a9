"""The backup chains screen, driven by Pilot against a real QEMU: run a policy, fix a problem."""

from __future__ import annotations

import os

from textual.command import CommandList, CommandPalette

from tests.kit.chains import damage
from tests.kit.common import make_policy, requires_qemu, wait_for
from tests.kit.dashboard import make_app, messages, screen_text, watch
from tui.core.chains.run import run_policy
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageState
from tui.session import LaunchOptions, Session
from tui.ui.messages import ChainsVerified, PolicyRunFinished
from tui.ui.screens.chains import ChainsScreen
from tui.ui.screens.dialogs import ConfirmDialog
from tui.ui.screens.help import HelpScreen

pytestmark = requires_qemu


async def test_run_policy_and_fix_a_retired_bitmap_from_the_screen(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=2)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = Ledger(tmp_path / "l.sqlite")
    pol = make_policy("nightly", {"connection": "vm0", "drives": ["drive0", "drive1"],
                                       "bitmap": "bm", "target_dir": str(sb.dir)})
    app = make_app(fleet, ledger, pol)

    def runs() -> list[PolicyRunFinished]:
        return messages(app).of(PolicyRunFinished)

    def verified() -> list[ChainsVerified]:
        return messages(app).of(ChainsVerified)

    async with watch(app, size=(110, 30)) as pilot:
        await pilot.press("l")
        scr = app.screen
        assert isinstance(scr, ChainsScreen)
        assert "no backups yet" in screen_text(app)
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmDialog)
        assert "drive0: full → drive0-full-1.qcow2 (new chain: no chain yet)" in app.screen.question
        assert f"if drive1's job ({ledger.job_id(1, 1)}) fails: valid drive0-full-1.qcow2" \
            in app.screen.question
        await pilot.press("y")
        await wait_for(lambda: len(runs()) == 1, timeout=60, what="policy run")
        await pilot.pause()
        assert {d.state for d in runs()[-1].result.drives} == {ImageState.VALID}
        assert scr.query_one("#chains").row_count == 2
        text = screen_text(app)
        assert "VALID" in text and "drive0: next incremental on drive0-full-1.qcow2" in text

        await sb.write(0, 0, "1M")
        await pilot.press("r", "y")
        await wait_for(lambda: len(runs()) == 2, timeout=60, what="second run")
        # each drive's restore points, oldest first, as `bitmap-tui points` lists them
        await pilot.pause()
        assert "points: #1 full" in screen_text(app) and "#2 incr" in screen_text(app)
        assert [d.kind for d in runs()[-1].result.drives] == ["incremental", "incremental"]

        # A bitmap that is not ours is listed with its owner; there is nothing to fix.
        await conn.execute("block-dirty-bitmap-add", {"node": "disk1", "name": "stray"})
        await wait_for(lambda: any(b.name == "stray" for b in scr.view_data.bitmaps), what="stray")
        await pilot.pause()
        assert "bitmap disk1/stray: unknown (not ours)" in screen_text(app)
        assert not scr.view_data.problems
        await pilot.press("x")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmDialog)
        assert conn.model.nodes["disk1"].bitmap("stray") is not None
        # A bitmap of ours that no current chain uses is a problem: its fix removes it.
        retired = ledger.chain_bitmap("nightly", 99)
        await conn.execute("block-dirty-bitmap-add", {"node": "disk1", "name": retired})
        await wait_for(lambda: any(p.kind == "retired" for p in scr.view_data.problems), what="retired")
        await pilot.pause()
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await wait_for(lambda: conn.model.nodes["disk1"].bitmap(retired) is None, what="removed")
        await wait_for(lambda: not scr.view_data.problems, what="problem gone")
        assert conn.model.nodes["disk1"].bitmap("stray") is not None
        await pilot.press("v")
        await wait_for(lambda: len(verified()) == 1, timeout=30, what="verify")
        assert [line.split()[0] for line in scr.verify_lines] == ["PASS"] * 4
        # A damaged image fails.
        damage(runs()[-1].result.drives[1].path)
        await pilot.press("v")
        await wait_for(lambda: len(verified()) == 2, timeout=30, what="second verify")
        await pilot.pause()
        assert "FAIL check drive1-incr-2.qcow2" in "\n".join(scr.verify_lines)
        await pilot.press("escape")
        assert not isinstance(app.screen, ChainsScreen)
    ledger.close()


async def test_read_only_screen_neither_runs_nor_fixes(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb, read_only=True)
    ledger = Ledger(tmp_path / "l.sqlite")
    pol = make_policy("p", {"connection": "vm0", "drives": ["drive0"], "bitmap": "bm",
                                 "target_dir": str(sb.dir)})
    app = make_app(fleet, ledger, pol, read_only=True)
    async with watch(app, size=(100, 30)) as pilot:
        await pilot.press("l")
        scr = app.screen
        assert isinstance(scr, ChainsScreen)
        await pilot.press("r")
        await pilot.pause()
        assert app.screen is scr and not messages(app).of(PolicyRunFinished)
        assert "Run policy" not in screen_text(app)
        titles = [c.title for c in scr.context_commands()]
        assert "chains: Verify" in titles
        assert not [t for t in titles if t.startswith(("chains: Run policy", "chains: Apply fix"))]
        title, keys = app.key_help()[0]
        assert title == "Backup chains" and ("v", "Verify") in keys
        assert not [k for k in keys if k[1] in ("Run policy", "Fix problem")]
    assert ledger.txns() == []
    ledger.close()


async def test_console_start_reconciles_the_sessions_ledger(make_sandbox, fleet_for, tmp_path):
    """A transaction left open by a run that died is resolved when the app connects."""
    from tui.core.ledger.rows import JobState, TxnState

    sb = await make_sandbox(drives=1)
    ledger = Ledger(tmp_path / "l.sqlite")
    txn = ledger.new_txn("vm0", "p", "individual")
    ledger.add_image(txn_id=txn, connection="vm0", policy="p", drive="drive0", node="disk0",
                     bitmap="bm", path=str(sb.path("x.qcow2")), kind="full", parent_id=None,
                     job_id="bt-gone", source_file=None, source_size=None)
    ledger.mark_sending(txn)
    ledger.mark_sent(txn)
    ledger.release([txn])  # the run that owned it is over
    fleet = await fleet_for(sb)
    # What the console's start does beside the app: the session watches its own ledger.
    stop = Session(LaunchOptions(ledger=str(ledger.path))).watch_chains(fleet)
    try:
        await wait_for(lambda: ledger.txn(txn).state is TxnState.DONE, what="reconciled at start")
    finally:
        stop()
    assert ledger.jobs(txn)[0].state is JobState.UNKNOWN
    assert ledger.images()[0].state is ImageState.UNKNOWN
    ledger.close()


def on_disk(*paths: str) -> list[bool]:
    """Do these files exist? (A plain function: quick, and not an os call inside a coroutine.)"""
    return [os.path.exists(p) for p in paths]


async def test_help_palette_and_deleting_an_invalid_image(make_sandbox, fleet_for, tmp_path):
    """? lists the screen's keys; ctrl+p offers its commands; the invalid image is deleted."""
    sb = await make_sandbox(drives=2, failing=[1])
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = Ledger(tmp_path / "l.sqlite")
    pol = make_policy("nightly", {"connection": "vm0", "drives": ["drive0", "drive1"],
                                       "bitmap": "bm", "target_dir": str(sb.dir)})
    first = await run_policy(conn, ledger, pol, timeout=60)
    await sb.write(1, 0, "1M")
    await sb.arm_read_error(1)
    second = await run_policy(conn, ledger, pol, timeout=60)
    bad = next(d.path for d in second.drives if d.state is ImageState.INVALID)
    keep = [d.path for d in first.drives + second.drives if d.state is ImageState.VALID]
    app = make_app(fleet, ledger, pol)
    async with watch(app, size=(110, 30)) as pilot:
        await pilot.press("l")
        scr = app.screen
        assert isinstance(scr, ChainsScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        title, keys = app.screen.groups[0]
        assert title == "Backup chains"
        for row in (("r", "Run policy"), ("x", "Fix problem"), ("v", "Verify"), ("g", "Reload")):
            assert row in keys
        await pilot.press("escape")
        assert app.screen is scr

        await wait_for(lambda: any(p.kind == "invalid-images" for p in scr.view_data.problems),
                       what="invalid image offered")
        titles = [c.title for c in scr.context_commands()]
        assert "chains: Run policy nightly" in titles and "chains: Verify" in titles
        fix = "chains: Apply fix 1: delete invalid image(s): drive1-incr-2.qcow2"
        assert fix in titles
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"Apply fix 1")
        await wait_for(lambda: app.screen.query_one(CommandList).option_count > 0,
                       what="palette hits")
        assert fix in str(app.screen.query_one(CommandList).get_option_at_index(0).prompt)
        await pilot.press("down", "enter")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), what="confirmation")
        assert bad in app.screen.question and "will be deleted" in app.screen.question
        await pilot.press("y")
        await wait_for(lambda: not scr.view_data.problems, what="problem gone")
        assert not on_disk(bad)[0] and all(on_disk(*keep))
        assert next(i for i in ledger.images() if i.path == bad).deleted is not None
        await wait_for(lambda: "INVALID (deleted)" in screen_text(app), what="marked deleted")
    ledger.close()


def test_with_no_policy_the_empty_screen_does_not_offer_r():
    from tui.core.chains.policy import Policy
    from tui.ui.screens.chains import no_backups_hint

    assert "press r" not in no_backups_hint({}) and "policies" in no_backups_hint({})
    assert "press r" in no_backups_hint({"p": Policy("p", "vm0", ("drive0",))})
