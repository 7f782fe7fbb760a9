"""Fixtures of the console tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch):
    """Local time is UTC for the test (snapshots with timestamps stay machine-independent)."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()
