"""``bitmap-tui serve``: the service that owns each configured VM's QMP socket and serves it to
many clients at once (the console and the commands of every operator, scripts, qmp-shell).

Runs in the foreground and logs one line per event on stderr (systemd's journal keeps them).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tui.cli.options import add_ledger_option


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve every configured VM as a multi-client QMP socket",
                       description="Be the only client of each configured connection's QEMU "
                       "socket and serve each VM as NAME.qmp in service.socket_dir, with rights "
                       "by the clients' unix users (service.operators, service.viewers).")
    p.add_argument("--config", metavar="FILE", default=None,
                   help="config file (default: the XDG config, else /etc/bitmap-tui/config.yaml)")
    add_ledger_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Serve; the schedules' runs are recorded in ``--ledger`` (default: the XDG state dir's)."""
    from tui.service.service import serve

    ledger = getattr(args, "ledger", None)
    return serve(args.config, Path(ledger).expanduser() if ledger else None)
