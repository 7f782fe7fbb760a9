"""``bitmap-tui [--connect ADDR ...]`` opens the console; subcommands run headless.

Every command turns its arguments into :class:`tui.session.LaunchOptions` and gets its fleet from
one :class:`tui.session.Session`, so read-only, the audit log and timeouts are decided once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tui import __version__
from tui.cli import (
    apply,
    backup,
    chains,
    demo,
    points,
    prune,
    restore,
    schedule,
    serve,
    status,
    verify,
)
from tui.cli.options import add_ledger_option, add_session_options, refuse, session_of
from tui.core.base.errors import BitmapTuiError

SUBCOMMANDS = (status, apply, backup, chains, verify, demo, points, restore, prune, schedule,
               serve)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the console's options and every subcommand."""
    p = argparse.ArgumentParser(
        prog="bitmap-tui",
        description="A console for QEMU dirty bitmaps, backup transactions and block jobs.",
    )
    p.add_argument("--version", action="version", version=f"bitmap-tui {__version__}")
    add_session_options(p, top=True)
    add_ledger_option(p, top=True)
    p.add_argument("--theme", help="theme name (dark, light, high-contrast, ansi, or a user theme)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return p


def console(args: argparse.Namespace) -> int:
    """The default command: the console on ``--connect``, the config's connections, or a demo."""
    from tui.ui.run import run_console  # Textual only from here on

    return run_console(session_of(args))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", console)
    try:
        return int(handler(args))
    except BitmapTuiError as exc:
        return refuse(args, str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
