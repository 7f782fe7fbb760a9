"""Dashboard behaviour that needs no QEMU: read-only against a recording fake QMP server,
palette, help, filters, follow/pause, coalesced and diffed redraws."""

from __future__ import annotations

from dataclasses import replace

import pytest
from textual.command import CommandList, CommandPalette

from tests.kit.common import wait_for
from tests.kit.dashboard import calls_of, messages, running, settle, watch
from tests.kit.fake_state import build_store, running_job_events
from tests.kit.fakeqmp import commands_reply
from tui.core.base.errors import ReadOnlyError
from tui.core.model import reducer
from tui.core.ops import bitmaps as bitmap_ops
from tui.core.ops import jobs as job_ops
from tui.core.qmp.commands import is_mutating
from tui.session import ConsoleContext
from tui.ui.app import BitmapTuiApp
from tui.ui.messages import StateRendered
from tui.ui.screens.dialogs import ConfirmDialog
from tui.ui.screens.help import HelpScreen
from tui.ui.widgets.footer import RankedFooter

MiB = 1 << 20

FAKE_REPLIES = {
    "query-commands": commands_reply(
        "query-jobs", "job-pause", "job-cancel", "block-dirty-bitmap-merge", "query-named-block-nodes"),
    "query-named-block-nodes": [{
        "node-name": "disk0", "drv": "qcow2", "file": "/img/d0.qcow2", "ro": False,
        "image": {"virtual-size": 64 * MiB},
        "dirty-bitmaps": [{"name": "bm0", "granularity": 65536, "count": MiB, "recording": True,
                           "busy": False, "persistent": False}],
    }],
    "query-block": [{"device": "drive0", "inserted": {"node-name": "disk0", "drv": "qcow2"}}],
    "query-jobs": [{"id": "j0", "type": "backup", "status": "running",
                    "current-progress": MiB, "total-progress": 8 * MiB}],
    "query-block-jobs": [{"device": "j0", "type": "backup", "len": 8 * MiB, "offset": MiB,
                          "busy": True, "paused": False, "speed": 0, "io-status": "ok",
                          "ready": False, "status": "running"}],
}

MUTATING_KEYS_NODES = ["n", "x", "e", "d", "m", "r"]
MUTATING_KEYS_JOBS = ["p", "u", "c", "s", "F", "D"]


@pytest.fixture
async def fake_fleet(fake_qmp, fleet_for):
    async def make(read_only: bool):
        srv = await fake_qmp(replies=FAKE_REPLIES)
        fleet = await fleet_for(srv.address, read_only=read_only)
        await wait_for(lambda: "disk0" in fleet.store.connection("vm0").nodes, what="nodes")
        return srv, fleet
    return make


async def test_read_only_offers_nothing_mutating_and_sends_nothing(fake_fleet):
    srv, fleet = await fake_fleet(read_only=True)
    async with running(fleet) as (app, pilot, dash):
        assert app.read_only
        dash.select_bitmap("vm0", "disk0", "bm0")
        shown = {b.binding.id or "" for b in dash.active_bindings.values()}
        assert "dashboard.filter" in shown
        assert not [i for i in shown if i.startswith("bitmap.")]
        for key in MUTATING_KEYS_NODES:
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is dash, key
        dash.select_job("vm0", "j0")
        dash.jobs_table.focus()
        shown = {b.binding.id or "" for b in dash.active_bindings.values()}
        assert not [i for i in shown if i.startswith("job.")]
        for key in MUTATING_KEYS_JOBS:
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is dash, key
        titles = [c.title for c in dash.context_commands()]
        assert not [t for t in titles if t.startswith(("bitmap:", "job:"))]
        help_text = str(app.key_help())
        assert "Clear" not in help_text and "Cancel" not in help_text and "Filter" in help_text
        # Even when asked directly, the ops and the core refuse.
        conn = fleet["vm0"]
        out = await bitmap_ops.act(conn, "disk0", "bm0", "clear")
        assert not out.ok and not out.sent and "read-only" in out.message
        out = await job_ops.act(conn, "j0", "cancel")
        assert not out.ok and not out.sent
        with pytest.raises(ReadOnlyError):
            await conn.execute("block-dirty-bitmap-clear", {"node": "disk0", "name": "bm0"})
    assert srv.commands, "the fake server saw the queries"
    assert [c for c in srv.commands if is_mutating(c) and c != "qmp_capabilities"] == []


async def test_palette_offers_context_commands_and_confirms(fake_fleet):
    srv, fleet = await fake_fleet(read_only=False)
    async with running(fleet) as (app, pilot, dash):
        dash.select_bitmap("vm0", "disk0", "bm0")
        dash.select_job("vm0", "j0")
        titles = [c.title for c in dash.context_commands()]
        for t in ("bitmap: Add", "bitmap: Clear", "bitmap: Disable", "bitmap: Merge into",
                  "bitmap: Remove", "job: Cancel", "job: Pause", "job: Set speed"):
            assert t in titles
        assert "bitmap: Enable" not in titles and "job: Resume" not in titles
        dash.nodes_table.focus()
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"bitmap: Clear")
        await wait_for(lambda: app.screen.query_one(CommandList).option_count > 0,
                       what="palette hits")
        first = app.screen.query_one(CommandList).get_option_at_index(0)
        assert "bitmap: Clear" in str(first.prompt)
        await pilot.press("down", "enter")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), what="confirmation")
        assert "'bm0' on node disk0" in app.screen.question
        await pilot.press("escape")
    assert "block-dirty-bitmap-clear" not in srv.commands


async def test_help_screen_lists_keys():
    app = BitmapTuiApp(ConsoleContext(store=build_store()))
    async with watch(app, size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        flat = [row for _, rows in app.screen.groups for row in rows]
        assert ("x", "Clear…") in flat and ("/", "Filter") in flat and ("q", "Quit") in flat
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_keymap_remaps_by_binding_id():
    app = BitmapTuiApp(ConsoleContext(store=build_store()))
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        app.set_keymap({"bitmap.clear": "k"})
        dash.select_bitmap("web", "disk0", "nightly")
        await pilot.press("k")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("escape")
        assert ("k", "Clear…") in [r for _, rows in app.key_help() for r in rows]


async def test_event_filter_and_follow():
    store = build_store()
    app = BitmapTuiApp(ConsoleContext(store=store))
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        log = dash.event_log
        assert log.shown == 5
        log.focus()
        await pilot.press("slash")
        await pilot.press(*"conn:web type:ERROR")
        await pilot.press("enter")
        await pilot.pause()
        lines = [s.text for s in log.lines]
        assert len(lines) == 1 and "BLOCK_JOB_ERROR" in lines[0]
        assert "filter" in str(log.border_title)
        await pilot.press("slash")
        await pilot.press("escape")
        await pilot.pause()
        assert log.shown == 5
        log.set_filter("type:COMPLETED type:CANCELLED", list(store.events), store.events_seen)
        assert [s.text.split()[2] for s in log.lines] == ["BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"]
        log.set_filter("conn:db", list(store.events), store.events_seen)
        assert log.shown == 1
        log.set_filter("", list(store.events), store.events_seen)
        await pilot.press("f")
        assert not log.following and "(paused)" in str(log.border_title)
        store.apply_event("web", {"event": "BLOCK_JOB_READY", "data": {"device": "inc-0"}})
        await settle(pilot, dash)
        assert log.shown == 6 and log.auto_scroll is False
        await pilot.press("f")
        assert log.following


async def test_node_filter_keeps_matching_bitmaps():
    app = BitmapTuiApp(ConsoleContext(store=build_store()))
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        await pilot.press("slash", *"week")
        await pilot.pause()
        keys = [str(r.key.value) for r in dash.nodes_table.ordered_rows]
        assert keys == ["web\x1fdisk1\x1f", "web\x1fdisk1\x1fb:weekly"]
        await pilot.press("escape")
        await pilot.pause()
        assert len(dash.nodes_table.rows) > 2


async def test_bursts_are_coalesced_and_tables_diffed():
    store = build_store()
    app = BitmapTuiApp(ConsoleContext(store=store))
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        await settle(pilot, dash)
        renders = len(messages(app).of(StateRendered))
        node = store.connection("web").nodes["disk0"]
        for i in range(1, 501):  # 500 changes in one go, as a flood of events would make
            bms = (replace(node.bitmaps[0], count=i * 65536),) + node.bitmaps[1:]
            new = {**store.connection("web").nodes, "disk0": replace(node, bitmaps=bms)}
            store.update("web", lambda c, new=new: replace(c, nodes=new))
        for _ in range(300):
            store.apply_event("web", {"event": "JOB_STATUS_CHANGE",
                                      "data": {"id": "inc-0", "status": "running"}})
        await settle(pilot, dash)
        assert len(messages(app).of(StateRendered)) - renders <= 3
        assert messages(app).rendered() == store.generation
        row = dash.nodes_table.get_row("web\x1fdisk0\x1fb:nightly")
        assert str(row[2]) == "31.2 MiB"
        assert dash.event_log.shown == 5 + 300
        # One bitmap's count changes: only its dirty and % cells are written.
        bms = (replace(node.bitmaps[0], count=MiB),) + node.bitmaps[1:]
        new = {**store.connection("web").nodes, "disk0": replace(node, bitmaps=bms)}
        store.update("web", lambda c: replace(c, nodes=new))
        await settle(pilot, dash)
        assert dash.nodes_table.last_changes == 2
        assert dash.connections_table.last_changes == 0


async def test_connection_rows_are_formatted_only_for_connections_that_changed():
    """A fleet of 200 redraws its connections table every frame: an unchanged connection (the
    same model object) keeps the row made last time."""
    store = build_store()
    app = BitmapTuiApp(ConsoleContext(store=store))
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        await settle(pilot, dash)
        table = dash.connections_table
        formatted = calls_of(table, "row_for")
        store.apply_event("web", {"event": "JOB_STATUS_CHANGE", "data": {"id": "x1", "status": "running"}})
        await settle(pilot, dash)
        assert [conn.name for (conn,) in formatted] == ["web"]
        assert len(store.state.connections) > 1
        assert str(table.get_row("web")[5]) == str(len(store.connection("web").active_jobs))


async def test_the_dialog_parts_composed_with_the_dashboard_are_gone_once_mounted():
    from tui.ui.screens.dialogs import DialogParts

    app = BitmapTuiApp(ConsoleContext(store=build_store()))
    async with watch(app, size=(80, 24)) as pilot:
        await settle(pilot, app.dashboard)
        assert not app.dashboard.query(DialogParts)
        assert app.focused is app.dashboard.nodes_table


async def test_footer_is_rebuilt_only_when_its_keys_change():
    """Every cursor move tells the footer its bindings may have changed; rebuilding its keys
    costs about 13 ms a time, so it happens only when the keys differ, once however many calls."""
    app = BitmapTuiApp(ConsoleContext(store=build_store()))
    async with watch(app, size=(120, 40)) as pilot:
        dash = app.dashboard
        await settle(pilot, dash)
        footer = dash.query_one(RankedFooter)
        rebuilds = calls_of(footer, "recompose")
        for _ in range(3):
            await pilot.press("down")
        for _ in range(20):
            dash.refresh_bindings()
        await pilot.pause()
        await pilot.pause()
        assert rebuilds == []
        nodes_keys = footer.keys()
        await pilot.press("tab")  # the jobs table: its own keys
        await wait_for(lambda: bool(rebuilds), what="a rebuild")
        await pilot.pause()
        assert len(rebuilds) == 1 and footer.keys() != nodes_keys
        shown = [str(k.description) for k in footer.query("FooterKey")]
        assert shown == [k.description for k in footer.keys()]


@pytest.mark.parametrize("env, period", [({}, 1 / 240), ({"TEXTUAL_FPS": "30"}, 1 / 30)])
def test_the_console_paints_on_a_fast_timer_unless_the_operator_says_otherwise(env, period):
    """The console's entry point sets Textual's paint timer (read when Textual is first imported)
    to 240/s: Textual's 60/s timer delays the paint after a slow frame by up to 33 ms."""
    import os
    import subprocess
    import sys

    code = ("import tui.cli.main, tui.ui.run, textual.screen as s; "
            "print(s.UPDATE_PERIOD)")
    clean = {k: v for k, v in os.environ.items() if k != "TEXTUAL_FPS"}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True,
                         text=True, check=True).stdout
    assert float(out) == pytest.approx(period)


async def test_dismiss_forgets_a_lost_job_and_reducer_does_not_resurrect_it():
    store = build_store()
    conn = store.connection("web")
    store.update("web", lambda c: reducer.dismiss_job(c, "full-2"))
    store.apply_event("web", {"event": "JOB_STATUS_CHANGE", "data": {"id": "full-2", "status": "null"}})
    assert "full-2" not in store.connection("web").jobs
    assert conn.jobs["full-2"].result is not None


def test_every_binding_has_an_id():
    from tui.ui.screens.bitmap_dialogs import AddBitmapDialog, MergeDialog
    from tui.ui.screens.dashboard import DashboardScreen
    from tui.ui.screens.dialogs import SpeedDialog
    from tui.ui.widgets.jobs import JobsTable
    from tui.ui.widgets.nodes import NodesTable

    ids = []
    for cls in (BitmapTuiApp, DashboardScreen, NodesTable, JobsTable, HelpScreen, ConfirmDialog,
                SpeedDialog, AddBitmapDialog, MergeDialog):
        for binding in cls.BINDINGS:
            assert binding.id, f"{cls.__name__}: {binding.key} has no id"
            ids.append(binding.id)
    screen_ids = [b.id for cls in (BitmapTuiApp, DashboardScreen, NodesTable, JobsTable)
                  for b in cls.BINDINGS]
    assert len(screen_ids) == len(set(screen_ids)), "ids on the dashboard must be unique"


async def test_event_flood_renders_only_what_the_log_holds():
    store = build_store()
    app = BitmapTuiApp(ConsoleContext(store=store))
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        running_job_events(store, 4000)
        await settle(pilot, dash)
        log = dash.event_log
        assert len(log.lines) <= log.max_lines
        assert "id=j3999" in log.lines[-1].text
        await pilot.press("question_mark")  # the keyboard still answers
        assert isinstance(app.screen, HelpScreen)


async def test_theme_change_recolours_existing_cells():
    app = BitmapTuiApp(ConsoleContext(store=build_store()))
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        table = dash.nodes_table
        before = table.get_row("web\x1fdisk0\x1fb:nightly")[1].style
        assert app.theme != "gruvbox"
        app.theme = "gruvbox"
        await settle(pilot, dash)
        await pilot.pause()
        after = table.get_row("web\x1fdisk0\x1fb:nightly")[1]
        assert str(after) == "active"
        assert after.style != before
        assert after.style == table.get_component_rich_style("state--active", partial=True)


def test_job_type_is_filled_from_block_job_events():
    store = build_store()
    store.apply_event("web", {"event": "JOB_STATUS_CHANGE", "data": {"id": "z", "status": "created"}})
    assert store.connection("web").jobs["z"].type == "?"
    store.apply_event("web", {"event": "BLOCK_JOB_COMPLETED",
                              "data": {"type": "backup", "device": "z", "len": 1, "offset": 1,
                                       "speed": 0}})
    assert store.connection("web").jobs["z"].type == "backup"


async def test_connection_selection_and_all_connections():
    store = build_store()
    web = store.connection("web")
    store.update("db", lambda c: replace(web, name="db", address=c.address))
    app = BitmapTuiApp(ConsoleContext(store=store))
    async with watch(app, size=(120, 40)) as pilot:
        dash = app.dashboard
        conns_of = lambda: {str(k.value).split("\x1f")[0] for k in dash.nodes_table.rows}  # noqa: E731
        assert conns_of() == {"web"}
        dash.connections_table.focus()
        await pilot.press("down")
        await settle(pilot, dash)
        assert dash.selected_connection == "db" and conns_of() == {"db"}
        assert {k.value.split("\x1f")[0] for k in dash.jobs_table.rows} == {"db"}
        await pilot.press("a")
        await settle(pilot, dash)
        assert conns_of() == {"web", "db"}
        # with several connections each node row names its connection
        assert str(dash.nodes_table.get_row("db\x1fdisk0\x1f")[0]) == "db:disk0"


def _cell(table, key, column) -> str:
    return str(table.get_cell(key, column))


async def test_narrow_layout_keeps_file_name_end_node_and_error_in_view():
    """At 80 columns: the file name's end, the job's node and a shortened error are visible;
    Enter on the job shows the full error. Wider, the full path and error come back."""
    from tui.ui.widgets.jobs import job_key
    from tui.ui.widgets.nodes import node_key

    app = BitmapTuiApp(ConsoleContext(store=build_store()), clock=lambda: 1000.0)
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        nodes, jobs = dash.nodes_table, dash.jobs_table
        await wait_for(lambda: nodes.file_width and "…" in _cell(
            nodes, node_key("web", "disk0"), "file"), what="narrow file cell")
        cell = _cell(nodes, node_key("web", "disk0"), "file")
        assert cell.endswith("disk0.qcow2") and len(cell) <= nodes.file_width
        assert jobs.narrow and [c.key.value for c in jobs.ordered_columns][-2:] == ["node", "error"]
        err = _cell(jobs, job_key("web", "inc-1"), "error")
        assert err.endswith("…") and "Input/output error".startswith(err[:-1])
        assert _cell(jobs, job_key("web", "inc-1"), "node") == "disk1"
        screen = "\n".join(s.text for s in app.screen._compositor.render_strips())
        assert "b-disk0.qcow2" in screen and err in screen and "disk1" in screen
        dash.select_job("web", "inc-1")
        jobs.focus()
        await pilot.press("enter")  # the job's details in a panel, not a toast
        from tui.ui.screens.dialogs import InfoDialog
        await wait_for(lambda: isinstance(app.screen, InfoDialog), what="job details")
        assert "error: Input/output error" in app.screen.text
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is dash
        await pilot.resize_terminal(140, 40)
        await wait_for(lambda: not jobs.narrow and nodes.full_paths, what="wide layout")
        await wait_for(lambda: _cell(nodes, node_key("web", "disk0"), "file")
                       == "qcow2 · /srv/vm/web-disk0.qcow2", what="full path")
        assert _cell(jobs, job_key("web", "inc-1"), "error") == "Input/output error"
        assert [c.key.value for c in jobs.ordered_columns][-3:] == ["eta", "node", "error"]


def test_job_ids_in_full_where_they_fit_else_cut_in_the_middle():
    from tui.ui.widgets.jobs import ID_MAX_NARROW, cut_middle, id_width

    ids = ["demo-backup", "demo-backup-2", "demo-backup-3"]
    assert id_width(ids, narrow=True) == len("demo-backup-2")
    assert cut_middle("demo-backup-2", 13) == "demo-backup-2"
    long = "nightly-backup-of-drive0-17"
    assert id_width([long], narrow=True) == ID_MAX_NARROW
    cut = cut_middle(long, ID_MAX_NARROW)
    assert len(cut) == ID_MAX_NARROW and cut.startswith("nightly") and cut.endswith("-17")


async def test_finished_jobs_do_not_squeeze_the_nodes_at_80x24():
    from dataclasses import replace

    from tui.core.model.state import Job, JobResult

    store = build_store()
    done = {f"old-{i}": Job(f"old-{i}", "backup", "concluded", result=JobResult.COMPLETED)
            for i in range(12)}
    store.update("web", lambda c: replace(c, jobs={**c.jobs, **done}))
    app = BitmapTuiApp(ConsoleContext(store=store), clock=lambda: 1000.0)
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        await settle(pilot, dash)
        assert dash.jobs_table.row_count >= 12
        assert dash.jobs_table.outer_size.height <= 6  # border, header, 4 jobs: the rest scrolls
        assert dash.nodes_table.outer_size.height >= 7


async def test_rows_added_to_a_full_jobs_table_scroll_without_a_screen_layout():
    """A table that fills its box takes new rows without a full-screen re-layout (Textual does
    one per change of a widget's scrollable size); a table that is not full still grows, and
    the scrollbar and scrolling know every row."""
    from tui.core.model.state import Job

    store = build_store()
    app = BitmapTuiApp(ConsoleContext(store=store), clock=lambda: 1000.0)
    async with watch(app, size=(80, 24)) as pilot:
        dash = app.dashboard
        table = dash.jobs_table
        await settle(pilot, dash)
        layouts = calls_of(dash, "_refresh_layout")

        async def add_jobs(first: int, count: int) -> None:
            for i in range(first, first + count):
                store.update("web", lambda c, i=i: replace(
                    c, jobs={**c.jobs, f"new-{i:02d}": Job(f"new-{i:02d}", "backup", "running")}))
                await settle(pilot, dash)

        height = table.outer_size.height
        await add_jobs(0, 6)  # fills the 6-line box: it grows, with screen layouts
        assert table.outer_size.height == 6 > height and layouts
        layouts.clear()
        await add_jobs(6, 10)  # a full box: no screen layout for these
        assert layouts == []
        assert table.outer_size.height == 6
        assert table.vertical_scrollbar.window_virtual_size == table.virtual_size.height
        assert table.virtual_size.height >= table.row_count + 1  # every row and the header
        table.focus()
        table.move_cursor(row=table.row_count - 1, animate=False)
        await settle(pilot, dash)
        assert table.scroll_y == table.max_scroll_y > 0  # the last row can be scrolled to
