"""A bad client costs only itself: garbage, a 10 MB value, a half-open connection, 500 connects
in a second, and a client that stops reading during an event flood are each disconnected
while QEMU and the other clients go on."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from tests.kit.common import requires_qemu, wait_for
from tests.kit.service import RawClient

pytestmark = [requires_qemu]


async def _connected_pair(served, name="vm"):
    good, bad = [await RawClient.connect(served.socket(name)) for _ in range(2)]
    await good.negotiate()
    await bad.negotiate()
    return good, bad


async def _still_served(client: RawClient) -> None:
    assert (await client.execute("query-status", msg_id="alive"))["return"]["status"] == "prelaunch"


async def test_garbage_and_a_value_that_is_not_an_object(make_sandbox, serve):
    sb = await make_sandbox(drives=1)
    served = await serve({"vm": sb.address}).start("vm")
    for junk in (b"\x00\xff garbage }{", b"[1, 2]", b'{"execute": "query-status"}}'):
        good, bad = await _connected_pair(served)
        await bad.send(junk)
        assert await bad.closed()
        await _still_served(good)
        good.close()
    await served.wait_log("bad input", count=3)


async def test_a_10_mb_value(make_sandbox, serve):
    sb = await make_sandbox(drives=1)
    served = await serve({"vm": sb.address}).start("vm")
    good, bad = await _connected_pair(served)
    with contextlib.suppress(ConnectionError):
        await bad.send(b'{"execute": "query-status", "arguments": {"x": "' + b"a" * (10 << 20))
    assert await bad.closed()
    await served.wait_log("a message larger than 1048576 bytes")
    await _still_served(good)


async def test_a_half_open_client_is_dropped_after_the_greeting_phase(make_sandbox, serve):
    sb = await make_sandbox(drives=1)
    served = await serve({"vm": sb.address}).start("vm")
    good = await RawClient.connect(served.socket("vm"))
    await good.negotiate()
    silent = await RawClient.connect(served.socket("vm"))
    assert "QMP" in await silent.message()
    assert await silent.closed(20)  # never negotiated
    await served.wait_log("no capabilities negotiation within")
    await _still_served(good)  # an idle client past negotiation stays


async def test_500_connects_in_a_second(make_sandbox, serve):
    sb = await make_sandbox(drives=1)
    served = await serve({"vm": sb.address}).start("vm")
    good = await RawClient.connect(served.socket("vm"))
    await good.negotiate()
    loop = asyncio.get_running_loop()
    start = loop.time()
    storm = []
    for _ in range(500):
        with contextlib.suppress(OSError):
            storm.append(await RawClient.connect(served.socket("vm")))
    assert loop.time() - start < 5
    for client in storm:
        client.close()
    await _still_served(good)
    late = await RawClient.connect(served.socket("vm"))
    await late.negotiate()
    await _still_served(late)


async def test_a_client_that_stops_reading_during_a_flood(fake_qmp, serve):
    qemu = await fake_qmp()
    served = await serve({"vm": qemu.address}).start("vm")
    good = await RawClient.connect(served.socket("vm"))
    await good.negotiate()
    # A socket nobody reads (a StreamReader would keep reading into its own buffer).
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(str(served.socket("vm")))
    stuck.sendall(b'{"execute": "qmp_capabilities"}')
    received = 0

    async def read_all() -> None:
        nonlocal received
        while True:
            msg = await good.message(30)
            received += "event" in msg

    reader = asyncio.create_task(read_all())
    flooding = True

    async def flood() -> None:  # 2,000 events a second, each with 4 KiB of data
        while flooding:
            for _ in range(20):
                await qemu.emit("BLOCK_JOB_PROGRESS", {"padding": "x" * 4096})
            await asyncio.sleep(0.01)

    flooder = asyncio.create_task(flood())
    try:
        await served.wait_log("disconnected: stopped reading", timeout=60)
        before = received
        await wait_for(lambda: received > before + 1000, 30, "events still reaching the reader")
    finally:
        stuck.close()
        flooding = False
        await flooder
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
