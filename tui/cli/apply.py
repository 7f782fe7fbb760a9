"""Headless ``bitmap-tui apply FILE.yaml --connect ADDR``: check, send, wait, print the verdict.

Exit codes: 0 every job completed; 1 a job failed or was cancelled (or its end was lost);
2 refused before any job started (bad file, no connection, a pre-flight error, unconfirmed
warnings, or QEMU refused the transaction). A deprecated ``drive-backup`` is only a notice (one
line with its blockdev equivalent on stderr): ``--yes`` is for warnings that risk data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tui.cli.options import EXIT_REFUSED, add_session_options, error, say, session_of
from tui.core.base.errors import BitmapTuiError
from tui.core.model.state import LinkState
from tui.core.txn.checks import Finding, prepare
from tui.core.txn.files import load
from tui.core.txn.model import COMPLETION_MODES, Transaction
from tui.core.txn.tracker import RESUME_WAIT, Sent, TransactionRun
from tui.core.txn.verdict import Verdict, describe
from tui.session import Session


def register(subparsers: Any) -> None:
    """Add the ``apply`` and ``compose`` subcommands."""
    p = subparsers.add_parser(
        "apply",
        help="check and send a transaction file, wait for its jobs, print the verdict",
        description="Load a transaction (YAML in QMP's shape), run the pre-flight checks, send "
        "it, wait until every job has ended and print what is valid, what is not, and what to "
        "do next. Exit 0: all jobs completed; 1: a job failed or was cancelled; 2: refused "
        "before any job started; 3: outcome unknown (the link dropped before QEMU's reply and "
        "did not come back to tell the jobs' fate: check them by id with query-jobs).",
    )
    p.add_argument("file", metavar="FILE.yaml", help="transaction file")
    add_session_options(p)
    p.add_argument("--completion-mode", choices=COMPLETION_MODES, default=None,
                   help="override the file's completion mode")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--yes", action="store_true",
                   help="accept warnings that risk data (e.g. a disabled source bitmap) and "
                   "send anyway; a deprecated drive-backup needs no --yes")
    p.add_argument("--wait-timeout", type=float, default=None, metavar="SECONDS",
                   help="stop waiting after this long (unfinished jobs count as lost)")
    p.set_defaults(handler=run)

    c = subparsers.add_parser(
        "compose",
        help="open the transaction composer (optionally on a file) for one connection",
    )
    c.add_argument("file", metavar="FILE.yaml", nargs="?", help="transaction file to start from")
    add_session_options(c)
    c.set_defaults(handler=compose)


def _refused(mode: str, error: str, checks: list[str] | None = None) -> Verdict:
    return Verdict(mode, False, error, checks=tuple(checks or ()))


def _emit(verdict: Verdict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(verdict.to_dict(), indent=2))
    else:
        for line in describe(verdict):
            say(line)
    return verdict.exit_code


def run(args: argparse.Namespace) -> int:
    """The ``apply`` handler."""
    mode = args.completion_mode or "individual"
    try:
        txn = load(args.file)
        session = session_of(args)
    except BitmapTuiError as exc:
        return _emit(_refused(mode, str(exc)), args.json)
    if args.completion_mode:
        txn = txn.with_mode(args.completion_mode)
    with session:
        return asyncio.run(_apply(session, args, txn))


async def _apply(session: Session, args: argparse.Namespace, txn: Transaction) -> int:
    mode = txn.completion_mode
    try:
        endpoints = session.endpoints()
        if len(endpoints) != 1:
            return _emit(_refused(mode, "apply needs exactly one --connect ADDR"), args.json)
        # read-only (flag or config) is enforced in the core; the audit log opens first
        # reconnect: a reply lost with the link is asked for again when the link is back
        fleet = await session.connect(reconnect=True)
    except BitmapTuiError as exc:
        return _emit(_refused(mode, str(exc)), args.json)
    conn = fleet[endpoints[0].name]
    try:
        model = conn.model
        if model.state is not LinkState.CONNECTED:
            return _emit(_refused(mode, f"{conn.name}: {model.error or model.state.value}"),
                         args.json)
        prepared = prepare(txn, model)
        checks = [str(f) for f in prepared.findings]
        if prepared.errors:
            return _emit(_refused(mode, f"{len(prepared.errors)} pre-flight error(s): "
                                        f"{prepared.errors[0].message}", checks), args.json)
        if prepared.warnings and not args.yes:
            return _emit(_refused(mode, f"{len(prepared.warnings)} warning(s) need confirmation "
                                        f"(--yes): {prepared.warnings[0].message}", checks),
                         args.json)
        if not args.json:
            for f in prepared.findings:
                say(notice_line(f) if f.fix is not None else str(f), file=sys.stderr)
        run = TransactionRun(conn, prepared)
        outcome = await run.send()
        if outcome.state is Sent.UNKNOWN:
            if not args.json:
                say(f"outcome unknown ({outcome.reason}); waiting for the link to ask QEMU for "
                    f"the jobs", file=sys.stderr)
            await run.resume(args.wait_timeout if args.wait_timeout is not None else RESUME_WAIT)
        if not run.accepted:
            assert run.verdict is not None
            return _emit(run.verdict, args.json)
        if not args.json:
            say(f"sent; waiting for {len(run.job_ids)} job(s): {', '.join(run.job_ids)}",
                  file=sys.stderr)
        verdict = await run.wait(args.wait_timeout)
        return _emit(verdict, args.json)
    finally:
        await fleet.stop()


def compose(args: argparse.Namespace) -> int:
    """The ``compose`` handler: the console (config, theme, audit log as usual) opened on the
    composer; esc leads to the dashboard. Textual is imported only here."""
    from tui.ui.run import open_composer_at_start, run_console

    txn = None
    if args.file and Path(args.file).exists():
        try:
            txn = load(args.file)
        except BitmapTuiError as exc:
            error(str(exc))
            return EXIT_REFUSED
    session = session_of(args)
    endpoints = session.endpoints()
    if len(endpoints) != 1:
        error("compose needs exactly one --connect ADDR")
        return EXIT_REFUSED
    return run_console(session, startup=open_composer_at_start(endpoints[0].name, txn, args.file))


def notice_line(finding: Finding) -> str:
    """One line: the finding and its blockdev equivalent (the commands to send instead)."""
    assert finding.fix is not None
    steps = [json.dumps({"execute": cmd, "arguments": a}) for cmd, a in finding.fix_prepare]
    steps.append(json.dumps(finding.fix.to_qmp()))
    return f"{finding.level}: action {(finding.index or 0) + 1}: drive-backup is deprecated; " \
           f"blockdev equivalent: {' then '.join(steps)}"
