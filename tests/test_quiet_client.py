"""The app's QMP client skips qemu.qmp's eager message formatting unless debug logging is on."""

from __future__ import annotations

import logging

import pytest
from qemu.qmp.message import Message

from tui.qmp.connection import QuietQMPClient


class CountingMessage(Message):
    formatted = 0

    def __str__(self) -> str:
        CountingMessage.formatted += 1
        return super().__str__()


@pytest.mark.parametrize("hook", ["_cb_inbound", "_cb_outbound"])
def test_no_formatting_without_debug(hook: str) -> None:
    client = QuietQMPClient("quiet")
    client.logger.setLevel(logging.INFO)
    CountingMessage.formatted = 0
    msg = CountingMessage({"event": "STOP", "data": {}})
    assert getattr(client, hook)(msg) is msg
    assert CountingMessage.formatted == 0


@pytest.mark.parametrize("hook", ["_cb_inbound", "_cb_outbound"])
def test_formats_and_logs_with_debug(hook: str, caplog: pytest.LogCaptureFixture) -> None:
    client = QuietQMPClient("quiet")
    client.logger.setLevel(logging.DEBUG)
    CountingMessage.formatted = 0
    msg = CountingMessage({"event": "STOP", "data": {}})
    with caplog.at_level(logging.DEBUG, logger=client.logger.name):
        assert getattr(client, hook)(msg) is msg
    assert CountingMessage.formatted == 1
    assert '"STOP"' in caplog.text


async def test_connection_uses_quiet_client_and_hands_the_store_plain_dicts(fake_qmp, fleet_for):
    from tests.conftest import wait_for

    srv = await fake_qmp()
    fleet = await fleet_for(srv.address, refresh_interval=30)
    conn = fleet["vm0"]
    assert isinstance(conn._client, QuietQMPClient)
    store = fleet.store
    seen: list[type] = []
    original = store.apply_event

    def spy(name, event):  # type: ignore[no-untyped-def]
        seen.append(type(event))
        original(name, event)

    store.apply_event = spy  # type: ignore[method-assign]
    await srv.emit("JOB_STATUS_CHANGE", {"id": "j1", "status": "running"})
    await wait_for(lambda: "j1" in store.connection("vm0").jobs, what="event in the store")
    assert seen == [dict]
    assert store.connection("vm0").jobs["j1"].status == "running"
