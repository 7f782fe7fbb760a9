"""Snapshots of the screens and dialogs issue-by-issue: the chains screen, the composer of a
"backup of these drives", job details, the clear-worded dialogs; at 80x24 and 120x40."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from textual.app import App

from tests.kit.fake_state import build_store, store_only
from tui.core.ledger.repository import Ledger
from tui.session import ConsoleContext
from tui.ui.app import BitmapTuiApp
from tui.ui.screens.chains import ChainsScreen
from tui.ui.screens.composer import ComposerScreen

pytestmark = pytest.mark.usefixtures("utc")
SIZES = [(80, 24), (120, 40)]


def dashboard() -> BitmapTuiApp:
    return BitmapTuiApp(ConsoleContext(store=build_store()), clock=lambda: 1000.0)


class ChainsApp(App[None]):
    """The chains screen on the fake fleet with a one-image ledger (web's other bitmaps are
    orphans: problems with their fixes)."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger

    def on_mount(self) -> None:
        self.push_screen(ChainsScreen(ConsoleContext(store=build_store()), self.ledger.path))


def one_image_ledger(path: Path) -> Ledger:
    ledger = Ledger(path)
    txn = ledger.new_txn("web", "nightly", "individual")
    ledger.add_image(txn_id=txn, connection="web", policy="nightly", drive="drive0",
                     node="disk0", bitmap="nightly", path="/backups/drive0-full-1.qcow2",
                     kind="full", parent_id=None, job_id="drive0-full-1",
                     source_file="/srv/vm/web-disk0.qcow2", source_size=64 << 20)
    # a fixed point in time, so the points timeline draws the same every run
    with sqlite3.connect(path) as db:
        db.execute("UPDATE images SET created = ?", (1_796_000_000.0,))
    return ledger


class IncrementalApp(App[None]):
    def on_mount(self) -> None:
        self.push_screen(ComposerScreen.for_incremental(store_only(), "vm0", ["drive0", "drive1"],
                                                        "/backups/{device}-incr-{n}.qcow2"))


@pytest.mark.parametrize("size", SIZES)
def test_chains_screen(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(ChainsApp(one_image_ledger(tmp_path / "l.sqlite")), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_composer_of_a_backup_of_two_drives_checks(snap_compare: Any,
                                                   size: tuple[int, int]) -> None:
    assert snap_compare(IncrementalApp(), terminal_size=size, press=["3"])


@pytest.mark.parametrize("size", SIZES)
def test_composer_leave_asks(snap_compare: Any, size: tuple[int, int]) -> None:
    async def focus_list(pilot: Any) -> None:
        pilot.app.screen.query_one("#actions").focus()
        await pilot.pause()

    assert snap_compare(IncrementalApp(), terminal_size=size, run_before=focus_list,
                        press=["escape"])


def job_focused(job_id: str) -> Any:
    """A ``run_before`` that puts the jobs table's cursor on ``job_id`` of "web"."""
    async def select(pilot: Any) -> None:
        dash = pilot.app.dashboard
        await pilot.pause()
        dash.select_job("web", job_id)
        dash.jobs_table.focus()
        await pilot.pause()

    return select


@pytest.mark.parametrize("size", SIZES)
def test_job_details_panel(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(dashboard(), terminal_size=size, run_before=job_focused("inc-1"),
                        press=["enter"])


@pytest.mark.parametrize("size", SIZES)
def test_cancel_job_dialog_words(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(dashboard(), terminal_size=size, run_before=job_focused("inc-0"),
                        press=["c"])
