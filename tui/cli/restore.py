"""``bitmap-tui restore POLICY DRIVE (--point N | --at TIME) (--to FILE | --export)``.

``--to`` writes one standalone image of the drive at that point and checks it against the chain;
``--export`` serves the point read-only over NBD from QEMU until Ctrl-C (or ``--for SECONDS``).

Exit codes: 0 written and checked (or exported), 1 the copy or the check failed (the partial file
is removed), 2 refused (no such point, not VALID, the file exists, read-only, not connected).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
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
from tui.core.base.errors import BitmapTuiError, ConfigError, ReadOnlyError
from tui.core.chains.points import Point, PointError, find_point, list_points
from tui.core.chains.restore import (
    FORMATS,
    RestoreFailed,
    RestoreRefused,
    RestoreResult,
    chain_is_local,
    end_export,
    restore_local,
    restore_qemu,
    start_export,
)
from tui.core.ledger.points_repository import PointsLedger
from tui.core.model.state import LinkState
from tui.core.qmp.address import parse_address_lenient
from tui.session import Session


def register(sub: Any) -> None:
    """Add ``restore``."""
    r = add_policy_command(sub, "restore",
                           "write a drive's restore point to a new image, or export it")
    r.add_argument("drive", help="the drive (as the policy names it)")
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--point", type=int, metavar="N", help="point number (see `points`)")
    which.add_argument("--at", metavar="TIME",
                       help="the newest restorable point at or before TIME (ISO 8601, or seconds "
                       "since the epoch; without a zone: local time)")
    out = r.add_mutually_exclusive_group(required=True)
    out.add_argument("--to", metavar="FILE", help="the new image (must not exist)")
    out.add_argument("--export", action="store_true",
                     help="export the point read-only over NBD from QEMU and print its URI")
    add_wait_option(r)
    r.add_argument("--format", choices=FORMATS, default="qcow2", help="format of the new image")
    r.add_argument("--route", choices=("auto", "local", "qemu"), default="auto",
                   help="local: qemu-img here; qemu: a block job in QEMU; auto: local when the "
                   "chain's files are on this machine")
    r.add_argument("--speed", type=int, default=0, metavar="BYTES",
                   help="limit the copy to this many bytes per second (default: unlimited)")
    r.add_argument("--for", dest="seconds", type=float, metavar="SECONDS",
                   help="with --export: remove the export after this long (default: Ctrl-C)")
    r.set_defaults(handler=run)


def parse_time(text: str) -> float:
    """ISO 8601 (``Z``/offset, or local time without one) or epoch seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RestoreRefused(f"--at {text!r}: not an ISO 8601 time or epoch seconds") from None
    return when.timestamp()


def run(args: argparse.Namespace) -> int:
    """The ``restore`` handler."""
    with session_of(args) as session:
        try:
            return asyncio.run(_restore(session, args))
        except (RestoreRefused, PointError, ReadOnlyError) as exc:
            return refuse(args, str(exc))
        except RestoreFailed as exc:
            return refuse(args, str(exc), EXIT_FAILED)


def _point(session: Session, ledger: PointsLedger, args: argparse.Namespace) -> tuple[Point, str]:
    try:
        pol = session.policy(args.policy)
    except ConfigError as exc:
        raise RestoreRefused(str(exc)) from None
    points = list_points(ledger, policy=pol.name, drive=args.drive, connection=pol.connection)
    if not points:
        raise RestoreRefused(f"policy {pol.name} has no points of drive {args.drive}")
    at = parse_time(args.at) if args.at is not None else None
    return find_point(points, number=args.point, at=at), pol.connection


async def _restore(session: Session, args: argparse.Namespace) -> int:
    with PointsLedger(session.ledger_path) as ledger:
        point, connection = _point(session, ledger, args)
        if args.export:
            return await _export(session, ledger, args, point, connection)
        session.may_change(f"writing {args.to}")
        route = args.route
        if route == "auto":
            route = "local" if chain_is_local(point) else "qemu"
        progress = None if args.json else _progress
        if route == "local":
            log = session.change_log(f"writing {args.to}")
            # Nothing else runs meanwhile, and the ledger belongs to this thread.
            result = restore_local(ledger, point, args.to, args.format, on_progress=progress,
                                   speed=args.speed, audit=log, wait=args.wait, on_note=note)
        else:
            result = await _via_qemu(session, ledger, args, point, connection, progress)
    if progress is not None:
        print(file=sys.stderr)
    _print(result, args.json)
    return EXIT_OK


async def _connected(session: Session, connection: str) -> Any:
    if connection not in session.endpoint_names():
        raise RestoreRefused(f"connection '{connection}' has no address (give --connect "
                             f"{connection}=ADDR or add it to the config)")
    fleet = await session.connect([connection])
    conn = fleet[connection]
    if conn.model.state is not LinkState.CONNECTED:
        await fleet.stop()
        raise RestoreRefused(f"{connection}: {conn.model.error or 'not connected'}")
    return fleet, conn


async def _via_qemu(session: Session, ledger: PointsLedger, args: argparse.Namespace, point: Point,
                    connection: str, progress: Any) -> RestoreResult:
    fleet, conn = await _connected(session, connection)
    try:
        local = parse_address_lenient(conn.model.address).kind == "unix"
        return await restore_qemu(conn, ledger, point, args.to, args.format, local_files=local,
                                  on_progress=progress, speed=args.speed, wait=args.wait,
                                  on_note=note)
    finally:
        await fleet.stop()


async def _export(session: Session, ledger: PointsLedger, args: argparse.Namespace, point: Point,
                  connection: str) -> int:
    session.may_change("exporting a point (it adds nodes and an NBD server to QEMU)")
    fleet, conn = await _connected(session, connection)
    try:
        if parse_address_lenient(conn.model.address).kind != "unix":
            raise RestoreRefused("--export needs QEMU on this machine (its NBD socket is made here)")
        export = await start_export(conn, ledger, point)
        try:
            if args.json:
                print(json.dumps({"drive": point.drive, "point": point.point, "uri": export.uri,
                                  "chain": list(point.chain)}), flush=True)
            else:
                say(f"{point.drive} point {point.point} is exported read-only at {export.uri}")
                sys.stdout.flush()
                say("  e.g. qemu-img convert -O qcow2 '" + export.uri + "' copy.qcow2, or "
                      "qemu-nbd --connect /dev/nbd0 + mount; Ctrl-C ends it", file=sys.stderr)
            try:
                await asyncio.wait_for(asyncio.Event().wait(), args.seconds)
            except TimeoutError:
                pass
        finally:
            await asyncio.shield(end_export(conn, ledger, export))
    except BitmapTuiError:
        raise
    finally:
        await fleet.stop()
    return EXIT_OK


def _progress(done: int, total: int) -> None:
    print(f"\r· copying {100 * done / total:5.1f}%", end="", file=sys.stderr, flush=True)


def _print(result: RestoreResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    say(f"{result.drive} point {result.point} → {result.image} ({result.format}, "
        f"{result.route} route)")
    say(f"  chain: {' ← '.join(reversed(result.chain))}")
    state = {True: "checked: identical to the chain", False: "check FAILED",
             None: "not checked"}[result.checked]
    say(f"  {state} ({result.detail})")
