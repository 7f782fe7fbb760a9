"""``bitmap-tui chains``: every drive's backup chain, next base and problems; ``--fix N``.

Exit codes: 0 shown (or fixed), 1 a fix failed, 2 refused (no such problem, read-only, not
confirmed, not connected).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

from tui.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    add_command,
    refuse,
    say,
    session_of,
)
from tui.core.base.format import human_bytes
from tui.core.chains.cleanup import delete_images
from tui.core.chains.reconcile import reconcile
from tui.core.chains.view import build_view
from tui.core.ledger.repository import Ledger
from tui.core.model.state import LinkState
from tui.session import Session


def register(sub: Any) -> None:
    """Add ``chains``."""
    c = add_command(sub, "chains", "show every drive's backup chain, next base and problems",
                    ledger=True, json=True)
    c.add_argument("--fix", type=int, metavar="N", help="apply the suggested fix of problem N")
    c.add_argument("--yes", action="store_true", help="confirm --fix (nothing is sent without it)")
    c.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The ``chains`` handler."""
    with session_of(args) as session:
        return asyncio.run(_chains(session, args))


async def _chains(session: Session, args: argparse.Namespace) -> int:
    read_only = session.read_only
    with Ledger(session.ledger_path) as ledger:
        names = [n for n in ledger.connections() if n in session.endpoint_names()]
        fleet = await session.connect(names) if names else None
        try:
            state = None
            if fleet is not None:
                for conn in fleet.connections.values():
                    # Resolving finished jobs dismisses them and detaches targets: not read-only.
                    if conn.model.state is LinkState.CONNECTED and not read_only:
                        await reconcile(conn, ledger)
                state = fleet.store.state
            view = build_view(ledger, state)
            if args.fix is not None:
                return await _apply_fix(session, args, view, fleet)
        finally:
            if fleet is not None:
                await fleet.stop()
    if args.json:
        print(json.dumps(view.to_dict(), indent=2, default=str))
        return EXIT_OK
    if not view.drives:
        say("the ledger has no backups yet")
    for d in view.drives:
        say(f"{d.connection}/{d.drive} (node {d.node}, bitmap {d.bitmap}: {d.bitmap_state})")
        for im in d.chain:
            size = human_bytes(im.size) if im.size is not None else "?"
            err = f" ({im.error})" if im.error else ""
            gone = " (deleted)" if im.deleted else ""
            say(f"  {im.kind:<11} {im.state.upper():<8} {size:>9}  {im.path}{err}{gone}")
        nxt = f"incremental on {os.path.basename(d.next_base)}" if d.next_base else "full"
        say(f"  next: {nxt} ({d.next_reason})")
    for p in view.points:
        say(f"VM-wide point: {p.connection} policy {p.policy or '-'}: transaction {p.txn_id} "
              f"({len(p.images)} drives)")
    for bm in view.bitmaps:
        say(f"bitmap {bm.node}/{bm.name}: owner {bm.owner}{'' if bm.ours else ' (not ours)'}")
    for i, pr in enumerate(view.problems, 1):
        say(f"problem {i} [{pr.kind}] {pr.connection}: {pr.text}")
        say(f"  fix: {pr.fix}")
    return EXIT_OK


async def _apply_fix(session: Session, args: argparse.Namespace, view: Any, fleet: Any) -> int:
    if not 1 <= args.fix <= len(view.problems):
        return refuse(args, f"there is no problem {args.fix} (the view lists "
                            f"{len(view.problems)})")
    pr = view.problems[args.fix - 1]
    if pr.image_ids:
        return _delete_images(session, args, pr, fleet)
    if pr.command is None:
        say(f"problem {args.fix}: {pr.fix}")
        return EXIT_OK
    cmd, arguments = pr.command
    if session.read_only:
        return refuse(args, f"read-only: not sending {cmd}")
    if not args.yes:
        say(f"would send to {pr.connection}: {json.dumps({'execute': cmd, 'arguments': arguments})}")
        say("add --yes to apply it")
        return EXIT_REFUSED
    if fleet is None or pr.connection not in fleet.connections:
        return refuse(args, f"{pr.connection} is not connected")
    await fleet[pr.connection].execute(cmd, arguments)
    say(f"applied: {cmd} {json.dumps(arguments)}")
    return EXIT_OK


def _delete_images(session: Session, args: argparse.Namespace, pr: Any, fleet: Any) -> int:
    """The "invalid images" fix: delete the listed files (local QEMU only), after --yes."""
    if pr.remote:
        say(f"{pr.connection} is a remote QEMU: bitmap-tui cannot delete files there; "
              "delete these on the QEMU host:")
        for p in pr.paths:
            say(f"  {p}")
        return EXIT_REFUSED
    audit = session.change_log("deleting anything")  # read-only: ReadOnlyError, one line
    if not args.yes:
        say(f"would delete {len(pr.paths)} invalid image(s) of {pr.connection}:")
        for p in pr.paths:
            say(f"  {p}")
        say("add --yes to delete them")
        return EXIT_REFUSED
    live = fleet.store.state.connections.get(pr.connection) if fleet is not None else None
    open_files = {n.file for n in live.nodes.values() if n.file} if live is not None else set()
    with Ledger(session.ledger_path) as ledger:
        result = delete_images(ledger, pr.connection, pr.image_ids, open_files,
                               audit=audit)
    for line in result.lines():
        say(line)
    return EXIT_OK if result.ok else EXIT_FAILED
