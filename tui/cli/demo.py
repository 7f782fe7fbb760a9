"""``bitmap-tui demo``: the console on a throw-away local QEMU, with something to look at.

Exit code 0, or 2 with one line when QEMU is missing or does not start.
"""

from __future__ import annotations

import argparse
from typing import Any

from tui.cli.options import EXIT_REFUSED, add_command, error, session_of
from tui.demo.sandbox import qemu_available


def register(subparsers: Any) -> None:
    """Add ``bitmap-tui demo``."""
    p = add_command(
        subparsers, "demo",
        "open the console on a throw-away local QEMU (two drives, bitmaps, a guest writer)",
        description="Start a local sandbox QEMU with two qcow2 drives (drive1 can be made to "
        "fail reads), bitmaps in every state, a slow backup and a background guest writer; open "
        "the console on it; remove everything on exit.",
    )
    p.add_argument("--theme", default=argparse.SUPPRESS, help="theme name")
    p.add_argument(
        "--write-interval", type=_interval, default=0.5, metavar="SECONDS",
        help="seconds between background guest writes (default 0.5)",
    )
    p.set_defaults(handler=run)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.01 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be between 0.01 and 3600 seconds")
    return value


def run(args: argparse.Namespace) -> int:
    """The ``demo`` command: the sandbox is started and removed by the console itself (also on
    ctrl+c, SIGTERM, SIGHUP)."""
    reason = qemu_available()
    if reason:
        error(f"demo: {reason}")
        return EXIT_REFUSED
    from tui.ui.run import DemoSettings, run_console  # Textual only from here on

    return run_console(session_of(args), demo=DemoSettings(args.write_interval))
