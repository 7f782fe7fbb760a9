"""``bitmap-tui verify``: ``qemu-img check`` each drive's chain; compare when asked.

Exit codes: 0 every check passed, 1 a check failed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tui.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    add_command,
    say,
    session_of,
)
from tui.core.chains.chain import chain_state
from tui.core.chains.verify import verify_chain
from tui.core.ledger.points_repository import PointsLedger


def register(sub: Any) -> None:
    """Add ``verify``."""
    v = add_command(sub, "verify", "qemu-img check each drive's chain; compare when asked",
                    ledger=True, json=True)
    v.add_argument("--drive", action="append", default=[], help="only these drives")
    v.add_argument("--live", action="store_true",
                   help="compare each chain's newest image with the live disk (opened shared)")
    v.add_argument("--reference", metavar="FILE", help="compare the newest image with this image")
    v.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The ``verify`` handler (reads image files only; sends nothing)."""
    session = session_of(args)
    results: list[dict[str, Any]] = []
    with PointsLedger(session.ledger_path) as ledger:
        for conn in ledger.connections():
            for drive in ledger.drives(conn):
                if args.drive and drive not in args.drive:
                    continue
                top = chain_state(ledger, conn, drive).restore_point
                if top is None:
                    results.append({"connection": conn, "drive": drive, "checks": [],
                                    "note": "no valid chain"})
                    continue
                ref = top.source_file if args.live else args.reference
                checks = verify_chain(ledger, top, reference=ref, live=args.live)
                results.append({"connection": conn, "drive": drive, "checks": [
                    {"path": c.path, "what": c.what, "ok": c.ok, "detail": c.detail} for c in checks]})
    ok = all(c["ok"] for r in results for c in r["checks"])
    if args.json:
        print(json.dumps({"ok": ok, "drives": results}, indent=2))
    else:
        for r in results:
            say(f"{r['connection']}/{r['drive']}" + (f": {r['note']}" if r.get("note") else ""))
            for c in r["checks"]:
                say(f"  {'PASS' if c['ok'] else 'FAIL'} {c['what']:<7} {c['path']}: {c['detail']}")
    return EXIT_OK if ok else EXIT_FAILED
