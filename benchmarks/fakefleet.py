"""The fleet the ``fleet`` benchmark polls: many fake QMP servers plus a few real QEMUs.

Runs as its own process (``python -m benchmarks.fakefleet DIR FAKES NODES BITMAPS QEMUS``) so the
measured process holds only the client side. Fake servers answer the app's queries with replies
shaped like QEMU 7.2's (pre-encoded, so they cost little); real QEMUs are
:class:`tui.demo.sandbox.Sandbox` instances with ``NODES // 2`` qcow2 drives (a qcow2 drive is two
named nodes: format and file) and ``BITMAPS`` bitmaps per drive. Prints ``ready {json}`` with the
socket paths, then serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import JSONStream
from tui.demo.sandbox import Sandbox

VERSION = {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "fake-fleet"}
COMMANDS = ["qmp_capabilities", "query-version", "query-commands", "query-named-block-nodes",
            "query-block", "query-jobs", "query-block-jobs"]


def node_info(i: int, j: int, bitmaps: int) -> dict[str, Any]:
    """One BlockDeviceInfo as QEMU 7.2 reports a qcow2 node with bitmaps."""
    path = f"/var/lib/images/vm{i}/disk{j}.qcow2"
    return {
        "iops_rd": 0, "detect_zeroes": "off",
        "image": {"virtual-size": 64 << 30, "filename": path, "cluster-size": 65536,
                  "format": "qcow2", "actual-size": 12 << 30,
                  "format-specific": {"type": "qcow2", "data": {
                      "compat": "1.1", "compression-type": "zlib", "lazy-refcounts": False,
                      "refcount-bits": 16, "corrupt": False, "extended-l2": False}},
                  "dirty-flag": False},
        "iops_wr": 0, "ro": False, "node-name": f"disk{j}", "backing_file_depth": 0,
        "drv": "qcow2", "iops": 0, "bps_wr": 0, "write_threshold": 0,
        "dirty-bitmaps": [
            {"name": f"bitmap{k}", "recording": k != 3, "persistent": True, "busy": False,
             "granularity": 65536, "count": (i * 7919 + j * 104729 + k * 65536) % (1 << 30)}
            for k in range(bitmaps)
        ],
        "encrypted": False, "bps": 0, "bps_rd": 0,
        "cache": {"no-flush": False, "direct": False, "writeback": True}, "file": path,
    }


def replies_for(i: int, nodes: int, bitmaps: int) -> dict[str, bytes]:
    named = [node_info(i, j, bitmaps) for j in range(nodes)]
    block = [{"device": f"drive{j}", "locked": False, "removable": True, "inserted": named[j],
              "type": "unknown"} for j in range(nodes)]
    replies: dict[str, Any] = {
        "qmp_capabilities": {}, "query-version": VERSION,
        "query-commands": [{"name": c} for c in COMMANDS],
        "query-named-block-nodes": named, "query-block": block,
        "query-jobs": [], "query-block-jobs": [],
    }
    return {k: json.dumps(v).encode() for k, v in replies.items()}


def make_handler(replies: dict[str, bytes]) -> Any:
    greeting = json.dumps({"QMP": {"version": VERSION, "capabilities": []}}).encode() + b"\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        stream = JSONStream()
        try:
            while data := await reader.read(65536):
                for msg in stream.feed(data):
                    body = replies.get(msg.get("execute", ""), b"{}")
                    tail = b', "id": ' + json.dumps(msg["id"]).encode() if "id" in msg else b""
                    writer.write(b'{"return": ' + body + tail + b"}\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return handle


async def serve(workdir: Path, fakes: int, nodes: int, bitmaps: int, qemus: int) -> None:
    servers = []
    paths: list[str] = []
    for i in range(fakes):
        path = workdir / f"fake{i}.sock"
        servers.append(await asyncio.start_unix_server(make_handler(replies_for(i, nodes, bitmaps)),
                                                       path=str(path)))
        paths.append(str(path))
    boxes: list[Sandbox] = []
    try:
        async def start_one(q: int) -> None:
            sb = Sandbox(drives=max(1, nodes // 2), workdir=workdir / f"qemu{q}")
            boxes.append(sb)
            for attempt in range(3):
                try:
                    # Bounded: a QEMU that never answers its control socket must not hang us.
                    await asyncio.wait_for(sb.start(), 30)
                    break
                except Exception:
                    # On a loaded machine QEMU's socket file can exist before it listens.
                    await sb.stop()
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.5)
            for d in range(sb.drives):
                for k in range(bitmaps):
                    await sb.add_bitmap(d, f"bitmap{k}", persistent=True)

        await asyncio.gather(*(start_one(q) for q in range(qemus)))
        boxes.sort(key=lambda b: str(b.dir))
        print("ready " + json.dumps({"fake": paths, "qemu": [str(b.socket) for b in boxes]}),
              flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        for sb in boxes:
            await sb.close()
        for s in servers:
            s.close()


if __name__ == "__main__":
    d, f, n, b, q = sys.argv[1:6]
    asyncio.run(serve(Path(d), int(f), int(n), int(b), int(q)))
