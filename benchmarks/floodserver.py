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
from typing import Any

from benchmarks.common import JSONStream

GREETING = {
    "QMP": {
        "version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "flood"},
        "capabilities": [],
    }
}
COMMANDS = ["qmp_capabilities", "query-version", "query-commands", "query-named-block-nodes",
            "query-block", "query-jobs", "query-block-jobs", "query-flood"]
REPLIES: dict[str, Any] = {
    "qmp_capabilities": {},
    "query-version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "flood"},
    "query-commands": [{"name": n} for n in COMMANDS],
    "query-named-block-nodes": [],
    "query-block": [],
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
                if cmd == "query-flood":
                    # Encoded before the reply, so the client's clock starts when the flood does.
                    lines = event_lines(int((msg.get("arguments") or {}).get("count", 10000)))
                out: dict[str, Any] = {"return": REPLIES.get(cmd, {})}
                if "id" in msg:
                    out["id"] = msg["id"]
                writer.write(json.dumps(out).encode() + b"\r\n")
                await writer.drain()
                if lines:
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
