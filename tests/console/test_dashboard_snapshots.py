"""Snapshots of the dashboard at 80x24 and 120x40 from a deterministic fake state."""

from __future__ import annotations

import pytest

from tests.kit.fake_state import build_store
from tui.session import ConsoleContext
from tui.ui.app import BitmapTuiApp

# Snapshots show event timestamps: render them in UTC whatever the machine's zone.
pytestmark = pytest.mark.usefixtures("utc")


def make_app() -> BitmapTuiApp:
    # A frozen clock: rates and ETAs come out the same on every run.
    return BitmapTuiApp(ConsoleContext(store=build_store()), clock=lambda: 1000.0)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_dashboard_snapshot(snap_compare, size):
    assert snap_compare(make_app(), terminal_size=size)


def test_dashboard_snapshot_read_only_help(snap_compare):
    app = BitmapTuiApp(ConsoleContext(store=build_store(), read_only=True), clock=lambda: 1000.0)
    assert snap_compare(app, press=["question_mark"], terminal_size=(80, 24))
