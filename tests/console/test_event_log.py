"""The event log formats only the lines it draws: a flood costs list work, not a render per event."""

from __future__ import annotations

from tests.kit.common import wait_for
from tests.kit.dashboard import calls_of, settle, watch
from tests.kit.fake_state import build_store, running_job_events
from tui.session import ConsoleContext
from tui.ui.app import BitmapTuiApp
from tui.ui.widgets.events import EventLog


def visible_text(log: EventLog) -> list[str]:
    return [log.render_line(y).text.rstrip() for y in range(log.scrollable_content_region.height)]


async def test_flood_formats_only_visible_lines():
    store = build_store()
    app = BitmapTuiApp(ConsoleContext(store=store))
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        log = dash.event_log
        await settle(pilot, dash)
        formatted = calls_of(log, "line")
        drawn = calls_of(log, "render_line")
        running_job_events(store, 5000)
        await settle(pilot, dash)
        await wait_for(lambda: bool(drawn), what="a redraw of the log")
        await pilot.pause()
        height = log.scrollable_content_region.height
        assert 0 < height < 24
        # Only the lines on screen were formatted: a screenful per redraw, not 5,000 ...
        assert len(formatted) <= 3 * height, len(formatted)
        assert len(drawn) <= 10 * height, len(drawn)
        # ... though every event was taken in (the oldest pruned beyond max_lines).
        assert log.shown == 5 + 5000 and log.seen == store.events_seen
        assert len(log.lines) == log.max_lines == 5000
        # Following: the newest event is the last visible line, drawn from the formatted strip.
        assert log.scroll_offset.y == log.max_scroll_y > 0
        assert "id=j4999" in [t for t in visible_text(log) if t][-1]
        # Redrawing an unchanged screen reuses the formatted lines.
        before = len(formatted)
        visible_text(log)
        assert len(formatted) == before


async def test_paused_log_keeps_its_place_and_filter_reapplies():
    store = build_store()
    app = BitmapTuiApp(ConsoleContext(store=store))
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        log = dash.event_log
        running_job_events(store, 200, "a")
        await settle(pilot, dash)
        assert log.toggle_follow() is False
        log.scroll_to(y=0, animate=False, immediate=True)
        first = visible_text(log)[0]
        running_job_events(store, 50, "b", conn="db")
        await settle(pilot, dash)
        assert log.scroll_offset.y == 0 and visible_text(log)[0] == first
        assert log.virtual_size.height == 5 + 250
        log.set_filter("conn:db", list(store.events), store.events_seen)
        assert log.shown == 51 and "id=b49" in log.lines[-1].text
        assert log.toggle_follow() is True
        await pilot.pause()
        assert "id=b49" in [t for t in visible_text(log) if t][-1]


async def test_empty_log_has_a_placeholder():
    from tui.core.model.store import Store

    store = Store()
    store.add_connection("web", "unix:/x")
    app = BitmapTuiApp(ConsoleContext(store=store))
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        await settle(pilot, dash)
        assert visible_text(dash.event_log)[0].startswith("No events yet")
        store.apply_event("web", {"event": "RESUME", "data": {}})
        await settle(pilot, dash)
        assert "RESUME" in visible_text(dash.event_log)[0]


async def test_the_log_follows_again_when_a_screen_returns():
    store = build_store()
    app = BitmapTuiApp(ConsoleContext(store=store))
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        log = dash.event_log
        await settle(pilot, dash)
        from textual.screen import Screen

        await app.push_screen(Screen())  # a full screen over the dashboard (as the composer)
        await pilot.pause()
        assert app.screen is not dash
        running_job_events(store, 200)
        await pilot.pause(0.3)
        app.pop_screen()
        await settle(pilot, dash)
        await wait_for(lambda: log.max_scroll_y > 0 and log.scroll_offset.y == log.max_scroll_y,
                       what="the log at its newest line")
        assert "id=j199" in [t for t in visible_text(log) if t][-1]


async def test_the_log_follows_when_its_box_shrinks():
    """More jobs (or a smaller terminal) shrink the log: its newest line stays in view."""
    store = build_store()
    app = BitmapTuiApp(ConsoleContext(store=store))
    async with watch(app, size=(80, 40)) as pilot:
        dash = app.dashboard
        log = dash.event_log
        running_job_events(store, 200)
        await settle(pilot, dash)
        assert log.scroll_offset.y == log.max_scroll_y > 0
        await pilot.resize_terminal(80, 24)
        await wait_for(lambda: log.scroll_offset.y == log.max_scroll_y, timeout=3,
                       what="the log at its newest line")
        assert "id=j199" in [t for t in visible_text(log) if t][-1]
