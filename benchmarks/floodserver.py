"""A QMP server that floods events: the stream both the app and the bare client drain.

Run as its own process (``python -m benchmarks.floodserver SOCK``) so the measured process holds
only the client side. Per connection: greeting, capabilities, stock answers to the queries the app
makes on connect, and on ``query-flood`` (arguments ``{"count": N}``) it answers, then writes N
events as fast as the socket takes them. A realistic burst: 64 backup jobs going through their
lifecycle (JOB_STATUS_CHANGE, BLOCK_JOB_PENDING, BLOCK_JOB_COMPLETED) plus unrelated events.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from benchmarks.common import JSONStream
from benchmarks.fakefleet import replies_for

GREETING = {
    "QMP": {
        "version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "flood"},
        "capabilities": [],
    }
}
COMMANDS = ["qmp_capabilities", "query-version", "query-commands", "query-named-block-nodes",
            "query-block", "query-jobs", "query-block-jobs", "query-flood"]
# A VM with 8 qcow2 drives × 4 bitmaps, so the dashboard has something to show beside the jobs.
_NODES = replies_for(0, 8, 4)
REPLIES: dict[str, Any] = {
    "qmp_capabilities": {},
    "query-version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "flood"},
    "query-commands": [{"name": n} for n in COMMANDS],
    "query-named-block-nodes": json.loads(_NODES["query-named-block-nodes"]),
    "query-block": json.loads(_NODES["query-block"]),
    "query-jobs": [],
    "query-block-jobs": [],
}
CHUNK = 512  # events per write: lets command replies interleave with the flood


def event_lines(count: int) -> list[bytes]:
    """``count`` encoded events (CRLF-terminated, as QEMU sends them)."""
    out: list[bytes] = []
    seq = 0
    while len(out) < count:
        jid = f"job{seq % 64}"
        base = {"seconds": 1700000000 + seq // 1000, "microseconds": seq % 1000 * 1000}
        cycle = [
            ("JOB_STATUS_CHANGE", {"id": jid, "status": "created"}),
            ("JOB_STATUS_CHANGE", {"id": jid, "status": "running"}),
            ("JOB_STATUS_CHANGE", {"id": jid, "status": "waiting"}),
            ("JOB_STATUS_CHANGE", {"id": jid, "status": "pending"}),
            ("BLOCK_JOB_PENDING", {"type": "backup", "id": jid}),
            ("BLOCK_JOB_COMPLETED", {"device": jid, "len": 67108864, "offset": 67108864,
                                     "speed": 0, "type": "backup"}),
            ("JOB_STATUS_CHANGE", {"id": jid, "status": "concluded"}),
            ("RTC_CHANGE", {"offset": seq, "qom-path": "/machine/unattached/device[0]"}),
        ]
        for name, data in cycle:
            out.append(json.dumps({"event": name, "data": data, "timestamp": base}).encode() + b"\r\n")
        seq += 1
    return out[:count]


async def _paced(writer: asyncio.StreamWriter, lines: list[bytes], rate: float) -> None:
    """Send ``lines`` at ``rate`` per second, each stamped with its send time (CLOCK_MONOTONIC,
    which the measuring process shares) in ``data["bench-sent"]``."""
    start = time.monotonic()
    sent = 0
    while sent < len(lines):
        due = min(len(lines), int((time.monotonic() - start) * rate) + 1)
        if due > sent:
            now = time.monotonic()
            batch = []
            for line in lines[sent:due]:
                obj = json.loads(line)
                obj["data"]["bench-sent"] = now
                batch.append(json.dumps(obj).encode() + b"\r\n")
            writer.write(b"".join(batch))
            await writer.drain()
            sent = due
        await asyncio.sleep(max(0.001, start + (sent + 1) / rate - time.monotonic()))


async def _flood(writer: asyncio.StreamWriter, lines: list[bytes]) -> None:
    for i in range(0, len(lines), CHUNK):
        writer.write(b"".join(lines[i : i + CHUNK]))
        await writer.drain()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    floods: list[asyncio.Task[None]] = []
    try:
        writer.write(json.dumps(GREETING).encode() + b"\r\n")
        stream = JSONStream()
        while data := await reader.read(65536):
            for msg in stream.feed(data):
                cmd = msg.get("execute", "")
                lines: list[bytes] = []
                args = msg.get("arguments") or {}
                if cmd == "query-flood":
                    # Encoded before the reply, so the client's clock starts when the flood does.
                    lines = event_lines(int(args.get("count", 10000)))
                out: dict[str, Any] = {"return": REPLIES.get(cmd, {})}
                if "id" in msg:
                    out["id"] = msg["id"]
                writer.write(json.dumps(out).encode() + b"\r\n")
                await writer.drain()
                if lines and args.get("rate"):
                    floods.append(asyncio.create_task(_paced(writer, lines, float(args["rate"]))))
                elif lines:
                    floods.append(asyncio.create_task(_flood(writer, lines)))
    except (ConnectionError, ValueError):
        pass
    finally:
        for t in floods:
            t.cancel()
        writer.close()


async def serve(path: str) -> None:
    server = await asyncio.start_unix_server(_handle, path=path)
    print("ready", flush=True)
    # Run until the parent closes our stdin.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
