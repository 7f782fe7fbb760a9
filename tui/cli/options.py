"""Options shared by every command, and their translation into :class:`tui.session.LaunchOptions`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tui.core.base.text import LINE_LIMIT, shown
from tui.session import LaunchOptions, Session

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2

# Remote-access options for the --connect addresses (config files set the same per connection).
TRANSPORT_FLAGS = {
    "tls_ca": ("--tls-ca", "CA certificate (PEM) that signed the QEMU's TLS certificate"),
    "tls_cert": ("--tls-cert", "client certificate (PEM) for QEMU's verify-peer=on"),
    "tls_key": ("--tls-key", "private key (PEM) of --tls-cert"),
    "ssh_config": ("--ssh-config", "ssh client config file for ssh:// addresses (ssh -F)"),
}


def add_session_options(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """The options every command takes. Subcommands repeat them with SUPPRESS defaults, so a
    value given before the subcommand is kept."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    p.add_argument("-c", "--connect", action="append", default=default([]), metavar="[NAME=]ADDR",
                   help="QMP address: unix:/path, /path, tcp:HOST:PORT, HOST:PORT or "
                   "ssh://[user@]host/path (repeat for a fleet)")
    p.add_argument("--config", metavar="FILE", default=default(None),
                   help="config file (default: XDG config dir)")
    p.add_argument("--timeout", type=float, default=default(None),
                   help="connect timeout in seconds (default: the config's, else 5)")
    p.add_argument("--audit-log", metavar="FILE", default=default(None),
                   help="where every mutating command sent is recorded "
                   "(default: the config's audit_log, else $XDG_STATE_HOME/bitmap-tui/audit.jsonl)")
    p.add_argument("--read-only", action="store_true", default=default(False),
                   help="never send a mutating command and never delete a file "
                   "(the config's defaults.read_only does the same)")
    p.add_argument("--direct", action="store_true", default=default(False),
                   help="connect to each QEMU's own socket even when 'bitmap-tui serve' serves it")
    g = p.add_argument_group("remote access (applies to every --connect address)")
    for dest, (flag, text) in TRANSPORT_FLAGS.items():
        g.add_argument(flag, dest=dest, metavar="FILE", help=text, default=default(None))
    g.add_argument("--allow-insecure-tcp", dest="allow_insecure_tcp", action="store_true",
                   default=default(False),
                   help="allow plaintext TCP to a non-loopback host (QMP has no authentication)")


def add_command(sub: Any, name: str, help_text: str, *, description: str | None = None,
                ledger: bool = False, json: bool = False) -> argparse.ArgumentParser:
    """A subcommand with the session options, then ``--ledger`` and ``--json`` when asked."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=description)
    add_session_options(p)
    if ledger:
        add_ledger_option(p)
    if json:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def add_policy_command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A subcommand that works on one backup policy: ``NAME POLICY``, the session options,
    ``--ledger`` and ``--json``."""
    p = add_command(sub, name, help_text, ledger=True, json=True)
    p.add_argument("policy", help="policy name from the config file")
    return p


def add_wait_option(p: argparse.ArgumentParser) -> None:
    """``--wait SECONDS``: how long to wait for another run on the same VM to end."""
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="when another backup, prune or restore runs on this VM, wait this long "
                        "for it to end (default 0: refuse at once, naming it)")


def note(line: str) -> None:
    """A progress or notice line of a command, on stderr (stdout keeps the result)."""
    say(f"· {line}", file=sys.stderr)


def add_ledger_option(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--ledger FILE``; on a subcommand it does not hide one given before the command."""
    p.add_argument("--ledger", metavar="FILE", default=None if top else argparse.SUPPRESS,
                   help="ledger database (default: XDG state dir)")


def launch_options(args: argparse.Namespace) -> LaunchOptions:
    """The parsed command line as typed launch options."""
    transport: dict[str, Any] = {k: getattr(args, k, None) for k in TRANSPORT_FLAGS}
    transport = {k: v for k, v in transport.items() if v}
    if getattr(args, "allow_insecure_tcp", False):
        transport["allow_insecure_tcp"] = True
    return LaunchOptions(
        connect=tuple(getattr(args, "connect", None) or ()),
        config=getattr(args, "config", None),
        timeout=getattr(args, "timeout", None),
        audit_log=getattr(args, "audit_log", None),
        read_only=bool(getattr(args, "read_only", False)),
        theme=getattr(args, "theme", None),
        ledger=getattr(args, "ledger", None),
        transport=transport,
        direct=bool(getattr(args, "direct", False)),
    )


def session_of(args: argparse.Namespace) -> Session:
    """The session for a parsed command line (loads and checks the config)."""
    return Session(launch_options(args))


def error(message: str) -> None:
    """One line on stderr, prefixed with the program's name (made safe: control characters
    escaped, cut when very long)."""
    print(f"bitmap-tui: {shown(message, LINE_LIMIT)}", file=sys.stderr)


def refuse(args: argparse.Namespace, message: str, code: int = EXIT_REFUSED) -> int:
    """A command that cannot go on: its one error line, and with ``--json`` the same error as
    JSON on stdout (``{"error": ...}``), so a script always reads JSON. Returns ``code``."""
    error(message)
    if getattr(args, "json", False):
        print(json.dumps({"error": message}, indent=2))
    return code


def say(line: str = "", *, file: Any = None) -> None:
    """One line of a command's text output (stdout unless ``file``), made safe like errors.

    Every text printer of the headless commands goes through here; JSON output does not (JSON
    escapes control characters itself and must stay exact)."""
    print(shown(line, LINE_LIMIT), file=file)
