"""Headless commands: ``backup POLICY``, ``chains``, ``verify``.

Exit codes follow ``bitmap-tui apply``: 0 all good, 1 a job (or a check) failed, 2 refused
before anything started (bad policy, no connection, a QMP error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from tui.chains.ledger import Ledger
from tui.chains.policy import Policy

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def _common(p: argparse.ArgumentParser) -> None:
    from tui.cli import _add_connect

    _add_connect(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--ledger", metavar="FILE", help="ledger database (default: XDG state dir)")


def register(sub: Any) -> None:
    """Add ``backup``, ``chains`` and ``verify`` to the ``bitmap-tui`` command line."""
    b = sub.add_parser("backup", help="run a backup policy once (full or incremental per drive)")
    b.add_argument("policy", help="policy name from the config file")
    _common(b)
    b.add_argument("--plan", action="store_true", help="only show what would be done")
    b.add_argument("--job-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up waiting for the jobs after this long (they keep running)")
    b.set_defaults(handler=lambda a: asyncio.run(_backup(a)))

    c = sub.add_parser("chains", help="show every drive's backup chain, next base and problems")
    _common(c)
    c.add_argument("--fix", type=int, metavar="N", help="apply the suggested fix of problem N")
    c.add_argument("--yes", action="store_true", help="confirm --fix (nothing is sent without it)")
    c.set_defaults(handler=lambda a: asyncio.run(_chains(a)))

    v = sub.add_parser("verify", help="qemu-img check each drive's chain; compare when asked")
    _common(v)
    v.add_argument("--drive", action="append", default=[], help="only these drives")
    v.add_argument("--live", action="store_true",
                   help="compare each chain's newest image with the live disk (opened shared)")
    v.add_argument("--reference", metavar="FILE", help="compare the newest image with this image")
    v.set_defaults(handler=_verify)


# ---------------------------------------------------------------------- config


def load_policies(given: str | None) -> dict[str, Policy]:
    """Policies from the config file (``policies:``), validated by :mod:`tui.config`."""
    from tui.config import load_config

    return dict(load_config(given).policies)


def _addresses(args: argparse.Namespace) -> dict[str, Any]:
    """Connection name → Endpoint, from ``--connect`` or else the config file."""
    from tui.cli import resolve_endpoints

    return {ep.name: ep for ep in resolve_endpoints(args)}


async def _open(args: argparse.Namespace, names: list[str], read_only: bool) -> Any:
    from tui.qmp.fleet import Fleet

    eps = _addresses(args)
    fleet = Fleet(reconnect=False, read_only=read_only, connect_timeout=getattr(args, "timeout", 5.0))
    for n in names:
        if n in eps:
            fleet.add(eps[n])
    fleet.start()
    try:
        await fleet.wait_first_answer(getattr(args, "timeout", 5.0) * 3 + 5)
    except TimeoutError:
        pass
    return fleet


def _err(msg: str) -> None:
    print(f"bitmap-tui: {msg}", file=sys.stderr)


# ---------------------------------------------------------------------- backup


async def _backup(args: argparse.Namespace) -> int:
    from tui.chains.run import run_policy
    from tui.model.state import LinkState

    policies = load_policies(args.config)
    pol = policies.get(args.policy)
    if pol is None:
        known = ", ".join(sorted(policies)) or "none"
        _err(f"no policy named '{args.policy}' (known: {known})")
        return EXIT_REFUSED
    if pol.connection not in _addresses(args):
        _err(f"policy '{pol.name}' uses connection '{pol.connection}', which has no address "
             f"(give --connect {pol.connection}=ADDR or add it to the config)")
        return EXIT_REFUSED
    fleet = await _open(args, [pol.connection], read_only=False)
    try:
        conn = fleet[pol.connection]
        if conn.model.state is not LinkState.CONNECTED:
            _err(f"{pol.connection}: {conn.model.error or 'not connected'}")
            return EXIT_REFUSED
        with Ledger(args.ledger) as ledger:
            if args.plan:
                from tui.chains.reconcile import reconcile
                from tui.chains.run import preview

                await reconcile(conn, ledger)
                plan, lines = preview(ledger, conn.model, pol)
                if args.json:
                    print(json.dumps({"policy": pol.name, "errors": plan.errors, "preview": lines},
                                     indent=2))
                else:
                    print(f"policy {pol.name} on {pol.connection} ({plan.mode}), not sent:")
                    print("\n".join(f"  {line}" for line in lines))
                return EXIT_REFUSED if plan.errors else EXIT_OK
            step = None if args.json else (lambda text: print(f"· {text}", file=sys.stderr))
            result = await run_policy(conn, ledger, pol, timeout=args.job_timeout, on_step=step)
    finally:
        await fleet.stop()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        _print_result(result)
    return result.exit_code


def _print_result(result: Any) -> None:
    head = f"policy {result.policy} on {result.connection} ({result.mode})"
    if result.txn_ids:
        head += ": transaction " + ", ".join(str(t) for t in result.txn_ids)
    print(head)
    for note in result.notes:
        print(f"  note: {note}")
    for d in result.drives:
        what = f"{d.kind} {d.reason}".strip()
        tail = f"  {str(d.state).upper()}"
        if d.error:
            tail += f": {d.error}"
        target = f" → {d.path}" if d.path else ""
        print(f"  {d.drive:<10} {what}{target}{tail}")
    if result.refused:
        print(f"refused: {result.refused}")
    if result.next:
        print("next:")
        for line in result.next:
            print(f"  {line}")


# ---------------------------------------------------------------------- chains


async def _chains(args: argparse.Namespace) -> int:
    from tui.chains.reconcile import reconcile
    from tui.chains.view import build_view
    from tui.format import human_bytes
    from tui.model.state import LinkState

    with Ledger(args.ledger) as ledger:
        names = ledger.connections()
        eps = _addresses(args)
        read_only = bool(getattr(args, "read_only", False))
        fleet = await _open(args, [n for n in names if n in eps], read_only=read_only) if eps else None
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
                return await _apply_fix(args, view, fleet)
        finally:
            if fleet is not None:
                await fleet.stop()
    if args.json:
        print(json.dumps(view.to_dict(), indent=2, default=str))
        return EXIT_OK
    if not view.drives:
        print("the ledger has no backups yet")
    for d in view.drives:
        print(f"{d.connection}/{d.drive} (node {d.node}, bitmap {d.bitmap}: {d.bitmap_state})")
        for im in d.chain:
            size = human_bytes(im.size) if im.size is not None else "?"
            err = f" ({im.error})" if im.error else ""
            gone = " (deleted)" if im.deleted else ""
            print(f"  {im.kind:<11} {im.state.upper():<8} {size:>9}  {im.path}{err}{gone}")
        nxt = f"incremental on {os.path.basename(d.next_base)}" if d.next_base else "full"
        print(f"  next: {nxt} ({d.next_reason})")
    for p in view.points:
        print(f"VM-wide point: {p.connection} policy {p.policy or '-'}: transaction {p.txn_id} "
              f"({len(p.images)} drives)")
    for bm in view.bitmaps:
        print(f"bitmap {bm.node}/{bm.name}: owner {bm.owner}{'' if bm.ours else ' (not ours)'}")
    for i, pr in enumerate(view.problems, 1):
        print(f"problem {i} [{pr.kind}] {pr.connection}: {pr.text}\n  fix: {pr.fix}")
    return EXIT_OK


async def _apply_fix(args: argparse.Namespace, view: Any, fleet: Any) -> int:
    if not 1 <= args.fix <= len(view.problems):
        _err(f"there is no problem {args.fix} (the view lists {len(view.problems)})")
        return EXIT_REFUSED
    pr = view.problems[args.fix - 1]
    if pr.image_ids:
        return _delete_images(args, pr, fleet)
    if pr.command is None:
        print(f"problem {args.fix}: {pr.fix}")
        return EXIT_OK
    cmd, arguments = pr.command
    if not args.yes:
        print(f"would send to {pr.connection}: {json.dumps({'execute': cmd, 'arguments': arguments})}")
        print("add --yes to apply it")
        return EXIT_REFUSED
    if fleet is None or pr.connection not in fleet.connections:
        _err(f"{pr.connection} is not connected")
        return EXIT_REFUSED
    await fleet[pr.connection].execute(cmd, arguments)
    print(f"applied: {cmd} {json.dumps(arguments)}")
    return EXIT_OK


def _delete_images(args: argparse.Namespace, pr: Any, fleet: Any) -> int:
    """The "invalid images" fix: delete the listed files (local QEMU only), after --yes."""
    from tui.chains.cleanup import delete_images

    if pr.remote:
        print(f"{pr.connection} is a remote QEMU: bitmap-tui cannot delete files there; "
              "delete these on the QEMU host:")
        print("\n".join(f"  {p}" for p in pr.paths))
        return EXIT_REFUSED
    if getattr(args, "read_only", False):
        _err("--read-only: not deleting anything")
        return EXIT_REFUSED
    if not args.yes:
        print(f"would delete {len(pr.paths)} invalid image(s) of {pr.connection}:")
        print("\n".join(f"  {p}" for p in pr.paths))
        print("add --yes to delete them")
        return EXIT_REFUSED
    live = fleet.store.state.connections.get(pr.connection) if fleet is not None else None
    open_files = {n.file for n in live.nodes.values() if n.file} if live is not None else set()
    with Ledger(args.ledger) as ledger:
        result = delete_images(ledger, pr.connection, pr.image_ids, open_files)
    for line in result.lines():
        print(line)
    return EXIT_OK if result.ok else EXIT_FAILED


# ---------------------------------------------------------------------- verify


def _verify(args: argparse.Namespace) -> int:
    from tui.chains.plan import chain_state
    from tui.chains.verify import verify_chain

    results: list[dict[str, Any]] = []
    with Ledger(args.ledger) as ledger:
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
            print(f"{r['connection']}/{r['drive']}" + (f": {r['note']}" if r.get("note") else ""))
            for c in r["checks"]:
                print(f"  {'PASS' if c['ok'] else 'FAIL'} {c['what']:<7} {c['path']}: {c['detail']}")
    return EXIT_OK if ok else EXIT_FAILED
