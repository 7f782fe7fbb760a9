"""``bitmap-tui status``: one snapshot of every connection's nodes, bitmaps and jobs.

Exit code 0 when every connection answered, 2 otherwise. Never sends a mutating command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from tui.cli.options import EXIT_OK, EXIT_REFUSED, add_command, refuse, say, session_of
from tui.core.base.format import human_bytes
from tui.core.model.serialize import fleet_dict
from tui.core.model.state import LinkState


def register(sub: Any) -> None:
    st = add_command(sub, "status", "print one snapshot of nodes, bitmaps and jobs", json=True)
    st.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    session = session_of(args)
    if not session.endpoints():
        return refuse(args, "status needs at least one --connect ADDR (or connections in the "
                            "config)")
    return asyncio.run(_status(session, args.json))


async def _status(session: Any, as_json: bool) -> int:
    fleet = await session.connect(read_only=True)
    data = fleet_dict(fleet.store.state)
    ok = all(c.state is LinkState.CONNECTED for c in fleet.store.state.connections.values())
    await fleet.stop()
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        print_status(data)
    return EXIT_OK if ok else EXIT_REFUSED


def print_status(data: dict[str, Any]) -> None:
    """The text form of ``status``."""
    for conn in data["connections"]:
        via = f", via service as {conn['service_role']}" if conn["service_role"] else ""
        head = f"{conn['name']} ({conn['address']}{via}): {conn['state']}"
        if conn["qemu_version"]:
            head += f", QEMU {conn['qemu_version']}"
        if conn["error"]:
            head += f" - {conn['error']}"
        say(head)
        for node in conn["nodes"]:
            dev = f" [{node['device']}]" if node["device"] else ""
            say(f"  {node['node_name']}{dev} {node['driver']} {node['file']} {human_bytes(node['size'])}")
            for bm in node["bitmaps"]:
                name = bm["name"] if bm["name"] is not None else "(anonymous)"
                persist = " persistent" if bm["persistent"] else ""
                say(
                    f"    {name:<24} {bm['state']:<13} dirty {human_bytes(bm['count']):>9}"
                    f"  granularity {human_bytes(bm['granularity'])}{persist}"
                )
        for job in conn["jobs"]:
            err = f" error: {job['error']}" if job["error"] else ""
            say(
                f"  job {job['id']} {job['type']} {job['status']} "
                f"{human_bytes(job['current'])}/{human_bytes(job['total'])}{err}"
            )
