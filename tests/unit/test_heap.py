"""A headless command settles the heap once its fleet synced: the state it loaded is kept out of
the cyclic collector's walks (at 1,000 connections those walks were a third of a refresh)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tui.core.base.heap import GC_THRESHOLDS
from tui.session import LaunchOptions, Session


@pytest.fixture
def python_gc_defaults() -> Iterator[None]:
    """Start from Python's own collector settings and leave them as they were found."""
    before = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


async def test_a_connected_session_freezes_its_synced_state(fake_qmp, python_gc_defaults):
    srv = await fake_qmp()
    session = Session(LaunchOptions(connect=(f"vm=unix:{srv.path}",), read_only=True))
    fleet = await session.connect()
    try:
        assert fleet.store.connection("vm").synced
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        await fleet.stop()
