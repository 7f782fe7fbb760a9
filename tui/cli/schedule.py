"""``bitmap-tui schedule [--json]``: each policy's schedule, its next run, and its last run with
the result (what ``bitmap-tui serve`` runs and recorded in the ledger).

Reads the config and the ledger only (sends nothing). Exit code 0.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from tui.cli.options import EXIT_OK, add_command, say, session_of
from tui.cli.points import iso_time
from tui.core.chains.policy import Policy
from tui.core.ledger.repository import Ledger
from tui.service.scheduler import next_slot


def register(sub: Any) -> None:
    """Add ``schedule``."""
    p = add_command(sub, "schedule", "list each policy's schedule, next run and last run",
                    ledger=True, json=True)
    p.set_defaults(handler=run)


def policy_schedule(ledger: Ledger, pol: Policy, now: float) -> dict[str, Any]:
    """One policy's schedule, next run and last run (slot, started, ended, result)."""
    runs = ledger.scheduled_runs(pol.name, limit=1)
    last = runs[0] if runs else None
    return {
        "policy": pol.name, "connection": pol.connection, "schedule": pol.schedule,
        "jitter": pol.jitter,
        "next": iso_time(next_slot(pol, now)) if pol.schedule else None,
        "last": None if last is None else {
            "slot": iso_time(last.slot), "started": iso_time(last.started),
            "ended": iso_time(last.ended) if last.ended else None,
            "result": last.result or "running"},
    }


def run(args: argparse.Namespace) -> int:
    """The ``schedule`` handler."""
    session = session_of(args)
    now = time.time()
    with Ledger(session.ledger_path) as ledger:
        rows = [policy_schedule(ledger, pol, now) for _, pol in sorted(session.config.policies.items())]
    if args.json:
        print(json.dumps({"policies": rows}, indent=2))
        return EXIT_OK
    if not rows:
        say("no policies configured")
    for row in rows:
        when = f"'{row['schedule']}'" if row["schedule"] else "not scheduled"
        if row["jitter"]:
            when += f" (+ up to {row['jitter']} s)"
        say(f"{row['policy']} on {row['connection']}: {when}")
        if row["next"]:
            say(f"  next: {row['next']}")
        last = row["last"]
        say(f"  last: {last['slot']}: {last['result']}" if last else "  last: never")
    return EXIT_OK
