"""Command line: ``bitmap-tui [--connect ADDR ...]`` opens the console; subcommands run headless.

Subcommand handlers are imported lazily so ``status`` never imports Textual and the app starts
without loading the headless code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tui import __version__
from tui.errors import BitmapTuiError

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_REFUSED = 2


def _add_connect(p: argparse.ArgumentParser, top: bool = False) -> None:
    # Subcommands repeat the options; SUPPRESS keeps values given before the subcommand.
    p.add_argument(
        "-c",
        "--connect",
        action="append",
        default=[] if top else argparse.SUPPRESS,
        metavar="[NAME=]ADDR",
        help="QMP address: unix:/path, /path, tcp:HOST:PORT, HOST:PORT or ssh://[user@]host/path "
        "(repeat for a fleet)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None if top else argparse.SUPPRESS,
        help="config file (default: XDG config dir)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0 if top else argparse.SUPPRESS,
        help="connect timeout in seconds",
    )
    p.add_argument(
        "--audit-log",
        metavar="FILE",
        default=None if top else argparse.SUPPRESS,
        help="where every mutating command sent is recorded "
        "(default: the config's audit_log, else $XDG_STATE_HOME/bitmap-tui/audit.jsonl)",
    )
    _add_transport(p, top)


# Remote-access options for the --connect addresses (config files set the same per connection).
_TRANSPORT_FLAGS = {
    "tls_ca": ("--tls-ca", "CA certificate (PEM) that signed the QEMU's TLS certificate"),
    "tls_cert": ("--tls-cert", "client certificate (PEM) for QEMU's verify-peer=on"),
    "tls_key": ("--tls-key", "private key (PEM) of --tls-cert"),
    "ssh_config": ("--ssh-config", "ssh client config file for ssh:// addresses (ssh -F)"),
}


def _add_transport(p: argparse.ArgumentParser, top: bool) -> None:
    g = p.add_argument_group("remote access (applies to every --connect address)")
    for dest, (flag, text) in _TRANSPORT_FLAGS.items():
        g.add_argument(flag, dest=dest, metavar="FILE", help=text,
                       default=None if top else argparse.SUPPRESS)
    g.add_argument(
        "--allow-insecure-tcp",
        dest="allow_insecure_tcp",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="allow plaintext TCP to a non-loopback host (QMP has no authentication)",
    )


def transport_options(args: argparse.Namespace) -> dict[str, Any]:
    """The remote-access options given on the command line, as Endpoint options."""
    opts: dict[str, Any] = {k: getattr(args, k, None) for k in _TRANSPORT_FLAGS}
    opts = {k: v for k, v in opts.items() if v}
    if getattr(args, "allow_insecure_tcp", False):
        opts["allow_insecure_tcp"] = True
    return opts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bitmap-tui",
        description="A console for QEMU dirty bitmaps, backup transactions and block jobs.",
    )
    p.add_argument("--version", action="version", version=f"bitmap-tui {__version__}")
    _add_connect(p, top=True)
    p.add_argument("--read-only", action="store_true", help="never send a mutating command")
    p.add_argument("--theme", help="theme name (dark, light, high-contrast, ansi, or a user theme)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    st = sub.add_parser("status", help="print one snapshot of nodes, bitmaps and jobs")
    _add_connect(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")

    for register in _extra_commands():
        register(sub)
    return p


def _extra_commands() -> list[Any]:
    """Subcommands contributed by other modules (apply, backup, demo, ...), if present."""
    regs = []
    for mod_name in ("tui.txn.cli", "tui.chains.cli", "tui.demo"):
        try:
            mod = __import__(mod_name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name and mod_name.startswith(exc.name):
                continue
            raise
        regs.append(mod.register)
    return regs


def _print_status(data: dict[str, Any]) -> None:
    from tui.format import human_bytes

    for conn in data["connections"]:
        head = f"{conn['name']} ({conn['address']}): {conn['state']}"
        if conn["qemu_version"]:
            head += f", QEMU {conn['qemu_version']}"
        if conn["error"]:
            head += f" - {conn['error']}"
        print(head)
        for node in conn["nodes"]:
            dev = f" [{node['device']}]" if node["device"] else ""
            print(f"  {node['node_name']}{dev} {node['driver']} {node['file']} {human_bytes(node['size'])}")
            for bm in node["bitmaps"]:
                name = bm["name"] if bm["name"] is not None else "(anonymous)"
                persist = " persistent" if bm["persistent"] else ""
                print(
                    f"    {name:<24} {bm['state']:<13} dirty {human_bytes(bm['count']):>9}"
                    f"  granularity {human_bytes(bm['granularity'])}{persist}"
                )
        for job in conn["jobs"]:
            err = f" error: {job['error']}" if job["error"] else ""
            print(
                f"  job {job['id']} {job['type']} {job['status']} "
                f"{human_bytes(job['current'])}/{human_bytes(job['total'])}{err}"
            )


async def _status(args: argparse.Namespace) -> int:
    from tui.model.serialize import fleet_dict
    from tui.model.state import LinkState

    endpoints = resolve_endpoints(args)
    fleet = make_fleet(args, reconnect=False, read_only=True, connect_timeout=args.timeout)
    for ep in endpoints:
        fleet.add(ep)
    fleet.start()
    try:
        await fleet.wait_first_answer(args.timeout * 3 + 5)
    except TimeoutError:
        pass
    data = fleet_dict(fleet.store.state)
    ok = all(c.state is LinkState.CONNECTED for c in fleet.store.state.connections.values())
    await fleet.stop()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_status(data)
    return EXIT_OK if ok else EXIT_REFUSED


def make_fleet(args: argparse.Namespace, cfg: Any = None, **options: Any) -> Any:
    """The Fleet every command uses: ``--read-only`` (or the config's) enforced in the core, and
    every session that may mutate audited (``--audit-log``, the config's, or the XDG default).
    A read-only session opens no audit log: it can send nothing to record."""
    from tui.audit import open_audit
    from tui.qmp.fleet import Fleet

    read_only = bool(getattr(args, "read_only", False) or options.pop("read_only", False))
    if cfg is not None and cfg.defaults.read_only:
        read_only = True
    audit = None
    if not read_only:
        path = getattr(args, "audit_log", None)
        if path is None and cfg is not None:
            path = cfg.audit_path()
        audit = open_audit(path)
    return Fleet(read_only=read_only, audit=audit, **options)


def resolve_endpoints(args: argparse.Namespace) -> list[Any]:
    """Endpoints from ``--connect`` or, when none is given, from the config file."""
    from tui.qmp.fleet import endpoints_from

    if args.connect:
        extra = transport_options(args)
        return [
            replace(ep, options={**ep.options, **extra}) if extra else ep
            for ep in endpoints_from(args.connect)
        ]
    try:
        from tui.config import load_config
    except ModuleNotFoundError:
        return []
    cfg = load_config(getattr(args, "config", None))
    return cfg.endpoints()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            if not resolve_endpoints(args):
                parser.error("status needs at least one --connect ADDR (or connections in the config)")
            return asyncio.run(_status(args))
        if args.command is not None:
            return int(args.handler(args))
        from tui.app import run_app

        return run_app(args)
    except BitmapTuiError as exc:
        print(f"bitmap-tui: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
