"""Faults the console must survive: QEMU killed mid-backup, a bitmap left inconsistent by a crash,
and sockets served by things that are not (well-behaved) QMP servers.

Each one must end as one clear line in the connection's state, never a traceback, with the other
connections unaffected and the broken one retried.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from tests.kit.common import connected, requires_qemu, wait_for
from tests.kit.fakeqmp import FakeQMP
from tui.core.base.errors import CommandTimeoutError, ConnectionLostError, QMPCommandError
from tui.core.model.state import BitmapState, JobResult, LinkState
from tui.core.qmp.address import parse_address
from tui.core.qmp.fleet import Endpoint, Fleet

TEN_MB = 10 * 2**20


class Transitions:
    """Every (state, error) a connection went through, recorded from the store."""

    def __init__(self, fleet: Fleet, name: str = "vm0") -> None:
        self.seen: list[tuple[LinkState, str | None]] = []

        def note() -> None:
            m = fleet.store.connection(name)
            if not self.seen or self.seen[-1] != (m.state, m.error):
                self.seen.append((m.state, m.error))

        fleet.store.subscribe(note)

    def errors(self) -> list[str]:
        return [e for _, e in self.seen if e]

    def has(self, text: str) -> bool:
        return any(text in e for e in self.errors())


def assert_one_line(text: str | None) -> None:
    assert text and "\n" not in text and "Traceback" not in text, text


async def fleet_of(*addresses: str, **kw: Any) -> Fleet:
    kw.setdefault("backoff_max", 0.3)
    kw.setdefault("connect_timeout", 2)
    fleet = Fleet(**kw)
    for i, addr in enumerate(addresses):
        fleet.add(Endpoint(f"vm{i}", parse_address(addr)))
    fleet.start()
    await fleet.wait_first_answer(30)
    return fleet


@pytest.fixture
async def fleets():
    made: list[Fleet] = []

    async def make(*addresses: str, **kw: Any) -> Fleet:
        f = await fleet_of(*addresses, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        await f.stop()


# ------------------------------------------------------------------ not QMP at all


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("garbage", "not a QMP server (it sent bytes that are not QMP JSON)"),
        ("http", "not a QMP server (it sent something that is not a QMP greeting)"),
        # connected, no greeting: what a QEMU whose monitor another client holds does too
        ("silent", "timed out: connected to {address} but no QMP greeting within 1 s: another "
                   "client holds it (QEMU serves one at a time), or QEMU is stopped or hung"),
    ],
)
async def test_socket_that_is_not_qmp(fake_qmp, fleets, mode: str, expected: str) -> None:
    bad = await fake_qmp(mode=mode)
    good = await fake_qmp()
    fleet = await fleets(bad.address, good.address, connect_timeout=1)
    bad_model = fleet.store.connection("vm0")
    assert bad_model.state is LinkState.FAILED
    assert bad_model.error == expected.format(address=bad.path)
    assert connected(fleet, "vm1")
    assert await fleet["vm1"].execute("query-version")


async def test_garbage_greeting_is_retried_and_recovers(fake_qmp, fleets) -> None:
    srv = await fake_qmp(mode="garbage")
    fleet = await fleets(srv.address)
    assert fleet.store.connection("vm0").state is LinkState.FAILED
    srv.mode = "qmp"  # the right server comes back on the same socket
    await wait_for(lambda: connected(fleet), what="reconnect to a real QMP server")


# ------------------------------------------------------------------ misbehaving mid-session


async def test_command_that_never_gets_a_reply_times_out_and_the_link_is_renewed(
    fake_qmp, fleets
) -> None:
    srv = await fake_qmp()
    other = await fake_qmp()
    fleet = await fleets(srv.address, other.address, command_timeout=0.5)
    seen = Transitions(fleet)
    srv.hang_on.add("block-dirty-bitmap-add")
    with pytest.raises(CommandTimeoutError) as err:
        await fleet["vm0"].execute("block-dirty-bitmap-add", {"node": "n", "name": "b"})
    assert str(err.value) == "vm0: QEMU did not answer 'block-dirty-bitmap-add' within 0.5 s"
    # A QMP monitor answers in order, so the link is dropped and made again.
    await wait_for(lambda: srv.accepted >= 2 and connected(fleet), what="a fresh link")
    assert any(state is LinkState.DISCONNECTED for state, _ in seen.seen)
    assert connected(fleet, "vm1") and other.accepted == 1


async def test_peer_failing_the_first_refresh_never_shows_connected(fake_qmp) -> None:
    """Connected means synced: a peer that greets but never answers query-block stays failed,
    and each attempt's transport is cleaned up (an ssh tunnel would otherwise leak per retry)."""
    from tui.core.model.store import Store
    from tui.core.qmp.connection import Connection
    from tui.core.qmp.transport import make_opener

    srv = await fake_qmp()
    srv.hang_on.add("query-block")
    opened: list[str] = []
    closed: list[str] = []
    inner = make_opener()

    async def opener(address: Any) -> Any:
        target, ssl, _cleanup = await inner(address)
        tag = f"attempt{len(opened)}"
        opened.append(tag)

        async def cleanup() -> None:
            closed.append(tag)

        return target, ssl, cleanup

    store = Store()
    states: list[LinkState] = []
    store.subscribe(lambda: states.append(store.connection("vm0").state))
    conn = Connection("vm0", parse_address(srv.address), store, command_timeout=0.3,
                      backoff_initial=0.05, backoff_max=0.1, opener=opener)
    conn.start()
    try:
        await wait_for(lambda: len(closed) >= 3, what="three failed attempts")
        assert LinkState.CONNECTED not in states
        m = store.connection("vm0")
        assert m.state is LinkState.FAILED
        assert m.error == "vm0: QEMU did not answer 'query-block' within 0.3 s"
    finally:
        await conn.stop()
    assert sorted(closed) == sorted(opened), "every attempt's transport closed"


async def test_reply_cut_off_in_the_middle(fake_qmp, fleets) -> None:
    srv = await fake_qmp()
    fleet = await fleets(srv.address, command_timeout=0.5)
    srv.raw_on["block-dirty-bitmap-add"] = b'{"return": {"half": '
    with pytest.raises(CommandTimeoutError):
        await fleet["vm0"].execute("block-dirty-bitmap-add", {"node": "n", "name": "b"})
    await wait_for(lambda: srv.accepted >= 2 and connected(fleet), what="a fresh link")


async def test_reply_larger_than_10mb(fake_qmp, fleets) -> None:
    srv = await fake_qmp()
    other = await fake_qmp()
    fleet = await fleets(srv.address, other.address)
    seen = Transitions(fleet)
    srv.raw_on["query-named-block-nodes"] = b'{"return": "' + b"x" * (TEN_MB + 1024) + b'"}\r\n'
    with pytest.raises(ConnectionLostError) as err:
        await fleet["vm0"].execute("query-named-block-nodes")
    assert_one_line(str(err.value))
    await wait_for(lambda: seen.has("larger than 10 MB"), what="the cause in the state")
    assert "connection lost: the server sent a message larger than 10 MB" in seen.errors()
    assert connected(fleet, "vm1")


async def test_event_larger_than_10mb(fake_qmp, fleets) -> None:
    srv = await fake_qmp()
    fleet = await fleets(srv.address)
    seen = Transitions(fleet)
    await srv.send_raw(b'{"event": "X", "data": {"a": "' + b"x" * (TEN_MB + 1024) + b'"}}\r\n')
    await wait_for(lambda: seen.has("larger than 10 MB"), what="the cause in the state")
    await wait_for(lambda: srv.accepted >= 2 and connected(fleet), what="reconnect")


@pytest.mark.parametrize(
    ("junk", "expected"),
    [
        (b"}{ not json\r\n", "connection lost: the server sent something that is not JSON"),
        (b"[1, 2, 3]\r\n", "connection lost: the server sent JSON that is not a QMP message"),
        (
            b'{"error": {"class": "GenericError", "desc": "JSON parse error"}}\r\n',
            "connection lost: QEMU could not parse what was sent (protocol out of step)",
        ),
    ],
)
async def test_junk_in_the_middle_of_a_session(fake_qmp, fleets, junk: bytes, expected: str) -> None:
    srv = await fake_qmp()
    fleet = await fleets(srv.address)
    seen = Transitions(fleet)
    await srv.send_raw(junk)
    await wait_for(lambda: expected in seen.errors(), what=expected)
    await wait_for(lambda: srv.accepted >= 2 and connected(fleet), what="reconnect")


def test_cli_status_with_broken_servers_prints_one_line_each(tmp_path) -> None:
    async def scenario() -> subprocess.CompletedProcess[str]:
        garbage = FakeQMP(tmp_path / "g.sock", mode="garbage")
        good = FakeQMP(tmp_path / "ok.sock")
        for s in (garbage, good):
            await s.start()
        try:
            return await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "tui", "status", "--timeout", "2",
                 "--connect", f"bad={garbage.address}", "--connect", f"ok={good.address}",
                 "--connect", f"gone=unix:{tmp_path / 'missing.sock'}"],
                capture_output=True, text=True, timeout=90, check=False,
            )
        finally:
            for s in (garbage, good):
                await s.stop()

    res = asyncio.run(scenario())
    assert res.returncode == 2
    # Nothing on stderr: qemu.qmp's own log records must not leak past the one-line states.
    assert res.stderr == ""
    lines = res.stdout.splitlines()
    assert any(ln.startswith("bad (") and "not a QMP server" in ln for ln in lines)
    assert any(ln.startswith("ok (") and ": connected" in ln for ln in lines)
    assert any(ln.startswith("gone (") and "no such socket" in ln for ln in lines)


# ------------------------------------------------------------------ real QEMU


async def start_slow_backup(sandbox: Any, conn: Any, job: str = "j0") -> None:
    await conn.execute("block-dirty-bitmap-add", {"node": "disk0", "name": "bm0"})
    await sandbox.write(0, 0, "8M")
    await sandbox.qmp("blockdev-add", {"driver": "null-co", "node-name": "tgt", "size": 64 * 2**20})
    await conn.execute(
        "blockdev-backup",
        {"job-id": job, "device": "disk0", "target": "tgt", "sync": "incremental",
         "bitmap": "bm0", "speed": 1 << 20},
    )


@requires_qemu
async def test_qemu_killed_mid_backup(make_sandbox, fleet_for) -> None:
    sb0 = await make_sandbox(drives=1)
    sb1 = await make_sandbox(drives=1)
    fleet = await fleet_for(sb0, sb1, job_poll_interval=0.1)
    await start_slow_backup(sb0, fleet["vm0"])
    await wait_for(lambda: fleet.store.connection("vm0").jobs["j0"].current > 0, what="progress")

    sb0.kill()
    await wait_for(lambda: fleet.store.connection("vm0").state is LinkState.DISCONNECTED,
                   what="the loss to show")
    m = fleet.store.connection("vm0")
    assert m.error is not None and m.error.startswith("connection lost")
    assert_one_line(m.error)
    job = m.jobs["j0"]
    assert job.result is JobResult.LOST and job.error == "connection lost"
    # The rest of the fleet carries on.
    assert connected(fleet, "vm1")
    await fleet["vm1"].execute("block-dirty-bitmap-add", {"node": "disk0", "name": "still-here"})

    await sb0.start()  # a fresh QEMU on the same socket: the backup is not in it
    await wait_for(lambda: connected(fleet) and fleet.store.connection("vm0").synced, what="resync")
    await fleet["vm0"].refresh()
    job = fleet.store.connection("vm0").jobs["j0"]
    assert job.result is JobResult.LOST, "a job QEMU no longer knows must stay untrusted"
    assert fleet.store.connection("vm0").nodes["disk0"].bitmap("bm0") is None


@requires_qemu
async def test_link_dropped_during_backup_then_job_reconciled(sandbox, fleet_for) -> None:
    """QEMU stays up but the link drops (as after a command timeout or a dead ssh tunnel)."""
    fleet = await fleet_for(sandbox, job_poll_interval=0.1)
    conn = fleet["vm0"]
    await start_slow_backup(sandbox, conn)
    await wait_for(lambda: fleet.store.connection("vm0").jobs["j0"].current > 0, what="progress")
    seen = Transitions(fleet)
    assert conn._client is not None
    await conn._drop(conn._client)  # what a command timeout does
    await wait_for(lambda: fleet.store.connection("vm0").jobs["j0"].result is JobResult.LOST
                   or any(s is LinkState.DISCONNECTED for s, _ in seen.seen), what="loss")
    await wait_for(lambda: connected(fleet) and fleet.store.connection("vm0").synced, what="back")
    await conn.refresh()
    job = fleet.store.connection("vm0").jobs["j0"]
    assert job.result is None and job.status == "running", "QEMU still runs it: no longer lost"
    await conn.execute("block-job-set-speed", {"device": "j0", "speed": 0})
    await wait_for(lambda: fleet.store.connection("vm0").jobs["j0"].result is JobResult.COMPLETED,
                   what="completion after the reconnect")


@requires_qemu
async def test_persistent_bitmap_not_saved_cleanly_shows_inconsistent(sandbox, fleet_for) -> None:
    await sandbox.add_bitmap(0, "keep", persistent=True)
    await sandbox.restart()  # a clean quit stores it in the qcow2 image
    await sandbox.write(0, 0, "64k")  # opened read-write: QEMU marks the stored bitmap in use
    sandbox.kill()  # ... and never clears the mark
    await sandbox.start()
    fleet = await fleet_for(sandbox)
    bm = fleet.store.connection("vm0").nodes["disk0"].bitmap("keep")
    assert bm is not None and bm.inconsistent and bm.persistent
    assert bm.state is BitmapState.INCONSISTENT
    conn = fleet["vm0"]
    # It cannot be used ...
    with pytest.raises(QMPCommandError) as err:
        await conn.execute("block-dirty-bitmap-clear", {"node": "disk0", "name": "keep"})
    assert "inconsistent" in err.value.desc.lower()
    # ... only removed, which is the fix the console offers.
    await conn.execute("block-dirty-bitmap-remove", {"node": "disk0", "name": "keep"})
    assert fleet.store.connection("vm0").nodes["disk0"].bitmap("keep") is None


def test_status_json_shows_inconsistent(tmp_path) -> None:
    """The headless view of the same crash: `inconsistent` in the JSON other tools read."""
    from tui.demo.sandbox import Sandbox, qemu_available

    if qemu_available():
        pytest.skip(str(qemu_available()))

    async def scenario() -> dict[str, Any]:
        sb = Sandbox(drives=1, workdir=tmp_path / "q")
        await sb.start()
        try:
            await sb.add_bitmap(0, "keep", persistent=True)
            await sb.restart()
            sb.kill()
            await sb.start()
            res = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "tui", "status", "--json", "--connect", sb.address],
                capture_output=True, text=True, timeout=90, check=False,
            )
            assert res.returncode == 0, res.stdout + res.stderr
            return dict(json.loads(res.stdout))
        finally:
            await sb.close()

    data = asyncio.run(scenario())
    bitmaps = data["connections"][0]["nodes"][0]["bitmaps"]
    assert bitmaps == [
        {**bitmaps[0], "name": "keep", "state": "inconsistent", "inconsistent": True, "persistent": True}
    ]


async def test_poll_reply_older_than_a_completion_event_does_not_undo_it(fake_qmp, fleets) -> None:
    """query-jobs answers "running" and then the completion event arrives before the poll's
    second query returns: the event is newer, so the job stays completed at 100%."""
    srv = await fake_qmp()
    fleet = await fleets(srv.address)
    srv.replies["query-jobs"] = [{"id": "j0", "type": "backup", "status": "running",
                                  "current-progress": 50, "total-progress": 100}]
    srv.replies["query-block-jobs"] = []
    srv.events_before["query-block-jobs"] = [
        {"event": "BLOCK_JOB_COMPLETED",
         "data": {"device": "j0", "type": "backup", "len": 100, "offset": 100, "speed": 0}},
    ]
    await fleet["vm0"].refresh_jobs()
    job = fleet.store.connection("vm0").jobs["j0"]
    assert job.result is JobResult.COMPLETED
    assert job.status == "concluded" and job.current == job.total == 100


async def test_stop_during_a_connect_attempt_closes_its_transport(fake_qmp) -> None:
    """Quitting while a server keeps the greeting back: the attempt's tunnel is still closed."""
    from tui.core.model.store import Store
    from tui.core.qmp.connection import Connection
    from tui.core.qmp.transport import make_opener

    srv = await fake_qmp(mode="silent")
    closed: list[bool] = []
    inner = make_opener()

    async def opener(address: Any) -> Any:
        target, ssl, _cleanup = await inner(address)

        async def cleanup() -> None:
            closed.append(True)

        return target, ssl, cleanup

    conn = Connection("vm0", parse_address(srv.address), Store(), connect_timeout=60, opener=opener)
    conn.start()
    await wait_for(lambda: srv.accepted >= 1, what="the attempt to reach the server")
    await asyncio.wait_for(conn.stop(), 10)
    assert closed == [True]
