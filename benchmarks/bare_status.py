"""The baseline of ``status_fleet`` and ``backup_overhead``: what a user would write with qemu.qmp alone.

``python -m benchmarks.bare_status status TARGETS.json [--quiet]``: connect to every socket at
once and send, per connection, the queries ``bitmap-tui status`` sends (its connection probe:
query-version, query-commands, query-named-block-nodes, query-block, query-jobs,
query-block-jobs), then print the replies as one JSON document. ``--quiet`` uses a client
without qemu.qmp's per-message debug formatting (three overridden hooks, as a careful user
would write them).

``python -m benchmarks.bare_status backup SOCK JOB.json``: send one ``blockdev-backup`` and wait
for its ``BLOCK_JOB_COMPLETED``.

Imports only the standard library and qemu.qmp, so its start-up is a bare script's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

PROBE = ("query-version", "query-commands", "query-named-block-nodes", "query-block",
         "query-jobs", "query-block-jobs")


class QuietClient(QMPClient):
    """qemu.qmp formats every message for its debug log before the logger drops it: skip that."""

    def _cb_inbound(self, msg: Any) -> Any:
        return super()._cb_inbound(msg) if self.logger.isEnabledFor(logging.DEBUG) else msg

    def _cb_outbound(self, msg: Any) -> Any:
        return super()._cb_outbound(msg) if self.logger.isEnabledFor(logging.DEBUG) else msg


async def probe(client: QMPClient, target: str) -> dict[str, Any]:
    await client.connect(target)
    try:
        return {cmd: await client.execute(cmd) for cmd in PROBE}
    finally:
        await client.disconnect()


async def status(targets: list[str], quiet: bool) -> None:
    cls = QuietClient if quiet else QMPClient
    replies = await asyncio.gather(*(probe(cls(f"c{i}"), t) for i, t in enumerate(targets)))
    print(json.dumps(dict(zip(targets, replies, strict=True)), indent=2))


async def backup(sock: str, arguments: dict[str, Any]) -> None:
    client = QMPClient("backup")
    await client.connect(sock)
    try:
        with client.listener(("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED")) as listener:
            await client.execute("blockdev-backup", arguments)
            async for event in listener:
                data: dict[str, Any] = dict(event["data"])  # type: ignore[call-overload]
                if data.get("device") != arguments["job-id"]:
                    continue
                if data.get("error") or event["event"] == "BLOCK_JOB_CANCELLED":
                    raise SystemExit(f"backup failed: {data}")
                break
    finally:
        await client.disconnect()


def main() -> None:
    what, *args = sys.argv[1:]
    if what == "status":
        asyncio.run(status(json.loads(Path(args[0]).read_text()), "--quiet" in args))
    else:
        asyncio.run(backup(args[0], json.loads(Path(args[1]).read_text())))


if __name__ == "__main__":
    main()
