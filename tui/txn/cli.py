"""Headless ``bitmap-tui apply FILE.yaml --connect ADDR``: check, send, wait, print the verdict.

Exit codes: 0 every job completed; 1 a job failed or was cancelled (or its end was lost);
2 refused before any job started (bad file, no connection, a pre-flight error, unconfirmed
warnings, or QEMU refused the transaction).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tui.errors import BitmapTuiError
from tui.txn.model import COMPLETION_MODES, Transaction
from tui.txn.verdict import Verdict, describe


def register(subparsers: Any) -> None:
    """Add the ``apply`` subcommand (called by :mod:`tui.cli`)."""
    from tui.cli import _add_connect

    p = subparsers.add_parser(
        "apply",
        help="check and send a transaction file, wait for its jobs, print the verdict",
        description="Load a transaction (YAML in QMP's shape), run the pre-flight checks, send "
        "it, wait until every job has ended and print what is valid, what is not, and what to "
        "do next. Exit 0: all jobs completed; 1: a job failed or was cancelled; 2: refused "
        "before any job started.",
    )
    p.add_argument("file", metavar="FILE.yaml", help="transaction file")
    _add_connect(p)
    p.add_argument("--completion-mode", choices=COMPLETION_MODES, default=None,
                   help="override the file's completion mode")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--yes", action="store_true",
                   help="accept warnings (e.g. deprecated drive-backup) and send anyway")
    p.add_argument("--wait-timeout", type=float, default=None, metavar="SECONDS",
                   help="stop waiting after this long (unfinished jobs count as lost)")
    p.set_defaults(handler=run)

    c = subparsers.add_parser(
        "compose",
        help="open the transaction composer (optionally on a file) for one connection",
    )
    c.add_argument("file", metavar="FILE.yaml", nargs="?", help="transaction file to start from")
    _add_connect(c)
    c.set_defaults(handler=compose)


def _refused(mode: str, error: str, checks: list[str] | None = None) -> Verdict:
    return Verdict(mode, False, error, checks=tuple(checks or ()))


def _emit(verdict: Verdict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(verdict.to_dict(), indent=2))
    else:
        for line in describe(verdict):
            print(line)
    return verdict.exit_code


def run(args: argparse.Namespace) -> int:
    """The ``apply`` handler."""
    from tui.txn.files import load

    mode = args.completion_mode or "individual"
    try:
        txn = load(args.file)
    except BitmapTuiError as exc:
        return _emit(_refused(mode, str(exc)), args.json)
    if args.completion_mode:
        txn = txn.with_mode(args.completion_mode)
    return asyncio.run(_apply(args, txn))


async def _apply(args: argparse.Namespace, txn: Transaction) -> int:
    from tui.cli import resolve_endpoints
    from tui.model.state import LinkState
    from tui.txn.checks import prepare
    from tui.txn.tracker import TransactionRun

    mode = txn.completion_mode
    try:
        endpoints = resolve_endpoints(args)
    except BitmapTuiError as exc:
        return _emit(_refused(mode, str(exc)), args.json)
    if len(endpoints) != 1:
        return _emit(_refused(mode, "apply needs exactly one --connect ADDR"), args.json)
    from tui.cli import make_fleet
    from tui.config import load_config

    timeout = getattr(args, "timeout", 5.0)
    try:
        cfg = load_config(getattr(args, "config", None))
        # --read-only/config read_only enforced in the core; --audit-log or the config's log.
        fleet = make_fleet(args, cfg, reconnect=False, connect_timeout=timeout)
    except BitmapTuiError as exc:
        return _emit(_refused(mode, str(exc)), args.json)
    audit = fleet.audit
    conn = fleet.add(endpoints[0])
    fleet.start()
    try:
        try:
            await fleet.wait_first_answer(timeout * 3 + 5)
        except TimeoutError:
            pass
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
            code = _emit(_refused(mode, f"{len(prepared.warnings)} warning(s) need confirmation "
                                        f"(--yes): {prepared.warnings[0].message}", checks),
                         args.json)
            if not args.json:
                _print_fixes(prepared)
            return code
        if not args.json:
            for line in checks:
                print(line, file=sys.stderr)
        run = TransactionRun(conn, prepared)
        if not await run.send():
            assert run.verdict is not None
            return _emit(run.verdict, args.json)
        if not args.json:
            print(f"sent; waiting for {len(run.job_ids)} job(s): {', '.join(run.job_ids)}",
                  file=sys.stderr)
        verdict = await run.wait(args.wait_timeout)
        return _emit(verdict, args.json)
    finally:
        await fleet.stop()
        if audit is not None:  # None when read-only: nothing is sent, nothing to record
            audit.close()


def compose(args: argparse.Namespace) -> int:
    """The ``compose`` handler: the console (config, theme, audit log as usual) opened on the
    composer; esc leads to the dashboard. Textual is imported only here."""
    from tui.app import run_app
    from tui.cli import resolve_endpoints
    from tui.txn.files import load

    txn = None
    if args.file and Path(args.file).exists():
        try:
            txn = load(args.file)
        except BitmapTuiError as exc:
            print(f"bitmap-tui: {exc}", file=sys.stderr)
            return 2
    endpoints = resolve_endpoints(args)
    if len(endpoints) != 1:
        print("bitmap-tui: compose needs exactly one --connect ADDR", file=sys.stderr)
        return 2
    name = endpoints[0].name

    async def open_composer(app: Any) -> None:
        from tui.screens.composer import ComposerScreen

        # the forms offer what exists: wait for the first answer before building them
        try:
            await app.fleet.wait_first_answer(float(getattr(args, "timeout", 5.0)) * 3 + 5)
        except TimeoutError:
            pass
        await app.push_screen(ComposerScreen(app.fleet, name, txn, path=args.file))

    args.startup = open_composer
    return run_app(args)


def _print_fixes(prepared: Any) -> None:
    """The blockdev-backup equivalents offered for deprecated drive-backups, ready to use."""
    for f in prepared.findings:
        if f.fix is None:
            continue
        print(f"action {f.index + 1} without drive-backup:")
        for cmd, cmd_args in f.fix_prepare:
            print(f"  first:   {json.dumps({'execute': cmd, 'arguments': cmd_args})}")
        print(f"  then:    {json.dumps(f.fix.to_qmp())}")
