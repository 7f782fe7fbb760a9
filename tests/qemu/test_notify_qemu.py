"""Notifications from a real run: a drive whose backup failed (QEMU read error) sends a message
naming VM, drive, policy, verdict and the next step to a local HTTP receiver through Apprise's
json:// URL and to a notify_command; a receiver that is down does not delay the run."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.kit.common import append_stdin_command, make_policy, requires_qemu
from tui.core.ledger.points_repository import PointsLedger
from tui.service.notify import Notifier, Target
from tui.service.scheduler import run_and_prune

pytestmark = requires_qemu


class Receiver(BaseHTTPRequestHandler):
    """Keeps each POSTed JSON body in ``server.got``."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.got.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def receiver() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.got = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def failed_run(sb, conn, ledger, pol, notifier, target):
    """A full, then an incremental whose drive1 read fails: the run's result and how long the
    run took."""
    assert await run_and_prune(conn, ledger, pol) == "ok"
    await sb.write(0, "1M", "1M", 0x61)
    await sb.write(1, "1M", "1M", 0x62)
    await sb.arm_read_error(1)
    started = time.monotonic()
    result = await run_and_prune(conn, ledger, pol,
                                 lambda _p, title, body: notifier.send(target, title, body))
    return result, time.monotonic() - started


async def test_failed_drive_is_notified_by_url_and_command(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=2, failing=[1])
    conn = (await fleet_for(sb))["vm0"]
    pol = make_policy("nightly", {"connection": "vm0", "drives": ["drive0", "drive1"],
                                  "target_dir": str(sb.dir)})
    server = receiver()
    out = tmp_path / "messages.txt"
    command = append_stdin_command(out)
    target = Target((f"json://127.0.0.1:{server.server_address[1]}/hook",), command)
    notifier = Notifier()
    try:
        with PointsLedger(tmp_path / "ledger.sqlite") as ledger:
            result, _ = await failed_run(sb, conn, ledger, pol, notifier, target)
            assert result == "failed: drive1 INVALID"
            await notifier.drain()
    finally:
        server.shutdown()
    [got] = server.got
    assert got["title"] == "bitmap-tui: vm0 policy nightly: FAILED"
    assert got["message"].startswith("VM vm0, policy nightly:\ndrive drive1: INVALID: ")
    assert "\nnext:\n" in got["message"] and "drive0" not in got["message"].split("next:")[0]
    text = out.read_text()
    assert text.startswith("bitmap-tui: vm0 policy nightly: FAILED\n\nVM vm0, policy nightly:\n")
    assert got["message"] in text


async def test_a_receiver_that_is_down_does_not_delay_the_run(make_sandbox, fleet_for, tmp_path,
                                                               caplog):
    sb = await make_sandbox(drives=2, failing=[1])
    conn = (await fleet_for(sb))["vm0"]
    pol = make_policy("nightly", {"connection": "vm0", "drives": ["drive0", "drive1"],
                                  "target_dir": str(sb.dir)})
    down = Target((f"json://127.0.0.1:{free_port()}/hook",))
    notifier = Notifier(delays=(1.0, 1.0))
    caplog.set_level(logging.WARNING, logger="tui.service.notify")
    with PointsLedger(tmp_path / "ledger.sqlite") as ledger:
        result, _ = await failed_run(sb, conn, ledger, pol, notifier, down)
        assert result == "failed: drive1 INVALID"
        pending = [t for t in asyncio.all_tasks() if t.get_name().startswith("notify ")]
        assert pending and not any(t.done() for t in pending)  # still trying after the run
        started = time.monotonic()
        await notifier.drain()
        assert time.monotonic() - started >= 2.0  # the retries waited (in the background)
    tries = [r.getMessage() for r in caplog.records if r.name == "tui.service.notify"]
    assert [f"failed (attempt {n})" in m for n, m in enumerate(tries, 1)] == [True] * 3


async def test_a_broken_chain_is_notified_with_its_reason(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    conn = (await fleet_for(sb))["vm0"]
    pol = make_policy("nightly", {"connection": "vm0", "drives": ["drive0"],
                                  "target_dir": str(sb.dir)})
    messages: list[tuple[str, str]] = []
    with PointsLedger(tmp_path / "ledger.sqlite") as ledger:
        assert await run_and_prune(conn, ledger, pol) == "ok"
        [full] = ledger.images()
        await sb.qmp("block-dirty-bitmap-remove", {"node": "disk0", "name": full.bitmap})
        await conn.refresh()
        ok = await run_and_prune(conn, ledger, pol, lambda _p, t, b: messages.append((t, b)))
        assert ok == "ok" and ledger.images()[-1].kind == "full"
    [(title, body)] = messages
    assert title == "bitmap-tui: vm0 policy nightly: new chain"
    assert body.startswith("VM vm0, policy nightly:\ndrive drive0: the chain broke, this run "
                           "took a full (new chain: chain broken: ")
