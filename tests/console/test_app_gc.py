"""The app keeps its start-up objects out of the cyclic collector (latency under event floods)."""

from __future__ import annotations

import gc

from tui.core.base.heap import GC_THRESHOLDS
from tui.core.model.store import Store
from tui.session import ConsoleContext
from tui.ui.app import BitmapTuiApp


async def test_app_freezes_startup_objects_and_collects_less_often():
    gc.unfreeze()
    app = BitmapTuiApp(ConsoleContext(store=Store()))
    async with app.run_test(size=(80, 24)):
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLDS
        young, middle, full = GC_THRESHOLDS
        assert young * (middle + 1) <= 20_000  # a middle collection walks few survivors
        assert young * (middle + 1) * full >= 8_000_000  # full collections stay rare
