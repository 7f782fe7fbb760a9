"""``bitmap-tui points [POLICY] [--drive D] [--json]``: every drive's restore points.

Reads the ledger only (sends nothing). Exit codes: 0 shown, 2 refused (no such policy).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from tui.cli.options import (
    EXIT_OK,
    add_command,
    refuse,
    say,
    session_of,
)
from tui.core.chains.points import Point, describe, list_points
from tui.core.ledger.points_repository import PointsLedger


def register(sub: Any) -> None:
    """Add ``points``."""
    p = add_command(sub, "points", "list each drive's restore points and the VM-wide points",
                    ledger=True)
    p.add_argument("policy", nargs="?", help="only this policy's points")
    p.add_argument("--drive", help="only this drive's points")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def iso_time(t: float) -> str:
    """A ledger time as ISO 8601 UTC (what ``restore --at`` accepts back)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def point_json(p: Point) -> dict[str, Any]:
    return {**p.to_dict(), "time": iso_time(p.time)}


def run(args: argparse.Namespace) -> int:
    """The ``points`` handler."""
    session = session_of(args)
    if args.policy is not None and args.policy not in session.config.policies:
        with PointsLedger(session.ledger_path) as ledger:
            recorded = {i.policy for i in ledger.images()}
        if args.policy not in recorded:
            known = ", ".join(sorted(session.config.policies)) or "none"
            return refuse(args, f"no policy named '{args.policy}' (known: {known})")
    with PointsLedger(session.ledger_path) as ledger:
        points = list_points(ledger, policy=args.policy, drive=args.drive)
    if args.json:
        print(json.dumps({"points": [point_json(p) for p in points]}, indent=2))
        return EXIT_OK
    if not points:
        say("no restore points")
    last: tuple[str, str] | None = None
    for p in points:
        if (p.connection, p.drive) != last:
            last = (p.connection, p.drive)
            say(f"{p.connection}/{p.drive} (policy {p.policy or '-'})")
        say(f"  {iso_time(p.time)} {describe(p)}")
    runs: dict[int, list[Point]] = {}
    for p in points:
        if p.vm_point is not None:
            runs.setdefault(p.vm_point, []).append(p)
    for txn_id, group in runs.items():
        drives = ", ".join(f"{p.drive} point {p.point}" for p in group)
        say(f"VM-wide point {txn_id} ({iso_time(group[0].time)}): {drives}")
    return EXIT_OK
