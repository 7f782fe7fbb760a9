"""``bitmap-tui backup POLICY``: run a backup policy once (full or incremental per drive).

Exit codes: 0 all good, 1 a job failed, 2 refused before anything started (bad policy, no
connection, read-only, a QMP error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from tui.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    add_policy_command,
    add_wait_option,
    note,
    refuse,
    say,
    session_of,
)
from tui.cli.prune import print_result as print_prune
from tui.cli.prune import prune_policy
from tui.core.chains.reconcile import reconcile
from tui.core.chains.run import preview, run_policy
from tui.core.ledger.points_repository import PointsLedger
from tui.core.model.state import LinkState
from tui.session import Session


def register(sub: Any) -> None:
    """Add ``backup``."""
    b = add_policy_command(sub, "backup", "run a backup policy once (full or incremental per drive)")
    b.add_argument("--plan", action="store_true", help="only show what would be done")
    b.add_argument("--job-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up waiting for the jobs after this long (they keep running)")
    add_wait_option(b)
    b.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The ``backup`` handler."""
    with session_of(args) as session:
        return asyncio.run(_backup(session, args))


async def _backup(session: Session, args: argparse.Namespace) -> int:
    pol = session.policy(args.policy)
    if pol.connection not in session.endpoint_names():
        return refuse(args, f"policy '{pol.name}' uses connection '{pol.connection}', which has "
                      f"no address (give --connect {pol.connection}=ADDR or add it to the config)")
        return EXIT_REFUSED
    if session.read_only and not args.plan:
        return refuse(args, "read-only: backup would send commands; --plan shows what it would do")
    fleet = await session.connect([pol.connection])
    try:
        conn = fleet[pol.connection]
        if conn.model.state is not LinkState.CONNECTED:
            return refuse(args, f"{pol.connection}: {conn.model.error or 'not connected'}")
        with PointsLedger(session.ledger_path) as ledger:
            if args.plan:
                if not session.read_only:  # finishing ended jobs dismisses them in QEMU
                    await reconcile(conn, ledger)
                plan, lines = preview(ledger, conn.model, pol)
                if args.json:
                    print(json.dumps({"policy": pol.name, "errors": plan.errors, "preview": lines},
                                     indent=2))
                else:
                    say(f"policy {pol.name} on {pol.connection} ({plan.mode}), not sent:")
                    for line in lines:
                        say(f"  {line}")
                return EXIT_REFUSED if plan.errors else EXIT_OK
            result = await run_policy(conn, ledger, pol, timeout=args.job_timeout,
                                      on_step=None if args.json else note, wait=args.wait,
                                      guest_agent=_guest_agent(session, pol.connection))
    finally:
        await fleet.stop()
    pruned = _auto_prune(session, pol, result, args.wait) if pol.prune == "auto" else None
    if args.json:
        print(json.dumps({**result.to_dict(), **({"prune": pruned.to_dict()} if pruned else {})},
                         indent=2, default=str))
    else:
        _print_result(result)
        if pruned is not None:
            print_prune(pruned)
    if pruned is not None and not pruned.ok and result.exit_code == EXIT_OK:
        return EXIT_FAILED
    return result.exit_code


def _guest_agent(session: Session, connection: str) -> str | None:
    """The connection's guest agent address from the config (None: none configured)."""
    for c in session.config.connections:
        if c.name == connection:
            return c.guest_agent
    return None


def _auto_prune(session: Session, pol: Any, result: Any, wait: float) -> Any:
    """``prune: auto``: after a backup that left every drive VALID."""
    if result.exit_code != EXIT_OK:
        return None
    return prune_policy(session, pol, wait=wait)


def _print_result(result: Any) -> None:
    head = f"policy {result.policy} on {result.connection} ({result.mode})"
    if result.txn_ids:
        head += ": transaction " + ", ".join(str(t) for t in result.txn_ids)
    say(head)
    for line in result.notes:
        say(f"  note: {line}")
    for d in result.drives:
        what = f"{d.kind} {d.reason}".strip()
        tail = f"  {str(d.state).upper()}"
        if d.error:
            tail += f": {d.error}"
        target = f" → {d.path}" if d.path else ""
        say(f"  {d.drive:<10} {what}{target}{tail}")
    if result.refused:
        say(f"refused: {result.refused}")
    if result.next:
        say("next:")
        for line in result.next:
            say(f"  {line}")
