"""``bitmap-tui prune POLICY [--dry-run] [--json]``: remove the points outside the policy's ``keep``.

Works on the image files on this machine (``qemu-img commit``/``rebase``, deletions); every step
is written to the ledger first and audited. Exit codes: 0 done (or shown), 1 a step failed (it is
finished by the next prune), 2 refused (no such policy, no ``keep``, read-only).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tui.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    add_policy_command,
    add_wait_option,
    note,
    refuse,
    say,
    session_of,
)
from tui.core.chains.policy import Policy
from tui.core.chains.prune import PruneResult, plan_prune, prune
from tui.core.ledger.points_repository import PointsLedger
from tui.session import Session


def register(sub: Any) -> None:
    """Add ``prune``."""
    p = add_policy_command(sub, "prune", "remove the restore points outside the policy's keep rules")
    p.add_argument("--dry-run", action="store_true", help="only show exactly what would be done")
    add_wait_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The ``prune`` handler."""
    session = session_of(args)
    pol = session.policy(args.policy)
    if pol.keep is None:
        return refuse(args, f"policy {pol.name} has no 'keep' rules: nothing to prune by")
    if args.dry_run:
        with PointsLedger(session.ledger_path) as ledger:
            plan = plan_prune(ledger, pol)
        if args.json:
            print(json.dumps({**plan.to_dict(), "dry_run": True}, indent=2))
        else:
            say(f"policy {pol.name}, not done:")
            for line in plan.lines():
                say(f"  {line}")
        return EXIT_OK
    with session:
        result = prune_policy(session, pol, wait=args.wait)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print_result(result)
    return EXIT_OK if result.ok else EXIT_FAILED


def prune_policy(session: Session, pol: Policy, *, wait: float = 0.0) -> PruneResult:
    """Prune ``pol`` in this session (refused when read-only); each change is audited. Waits
    up to ``wait`` seconds for another run on the VM to end."""
    log = session.change_log(f"pruning policy {pol.name}")
    with PointsLedger(session.ledger_path) as ledger:
        return prune(ledger, pol, audit=log, wait=wait, on_note=note)


def print_result(result: PruneResult) -> None:
    say(f"prune {result.plan.policy}:")
    for line in result.plan.lines():
        say(f"  {line}")
    for line in result.done:
        say(f"  {line}")
    for line in result.failed:
        say(f"  FAILED {line}")
