"""Where bitmap-tui keeps its files: the XDG config and state directories, computed in one place.

``$XDG_CONFIG_HOME/bitmap-tui`` holds ``config.yaml`` and ``themes/``; ``$XDG_STATE_HOME/bitmap-tui``
holds the audit log and the ledger. An unset or relative XDG variable means the default under the
home directory, as the XDG base-directory specification says.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_DIR = "bitmap-tui"
#: The system-wide config, read when the user has none of their own (the service's, shared by
#: every operator's console and command on the host).
SYSTEM_CONFIG_PATH = Path("/etc/bitmap-tui/config.yaml")
#: Where a service run by root serves its sockets when the config names no directory.
SYSTEM_RUNTIME_DIR = Path("/run") / APP_DIR


def _xdg(variable: str, *fallback: str) -> Path:
    base = os.environ.get(variable, "")
    root = Path(base) if base and os.path.isabs(base) else Path.home().joinpath(*fallback)
    return root / APP_DIR


def config_home() -> Path:
    """``$XDG_CONFIG_HOME/bitmap-tui`` (``~/.config/bitmap-tui`` when unset or relative)."""
    return _xdg("XDG_CONFIG_HOME", ".config")


def state_home() -> Path:
    """``$XDG_STATE_HOME/bitmap-tui`` (``~/.local/state/bitmap-tui`` when unset or relative)."""
    return _xdg("XDG_STATE_HOME", ".local", "state")


def default_config_path() -> Path:
    """The config file read when no ``--config`` is given."""
    return config_home() / "config.yaml"


def user_themes_dir() -> Path:
    """Where user themes (``*.yaml``) are looked for."""
    return config_home() / "themes"


def default_audit_path() -> Path:
    """The audit log used when neither ``--audit-log`` nor the config names one."""
    return state_home() / "audit.jsonl"


def default_service_socket_dir() -> Path:
    """Where ``bitmap-tui serve`` serves each VM's socket when the config names no directory:
    ``/run/bitmap-tui`` for root, else ``$XDG_RUNTIME_DIR/bitmap-tui`` (the state directory's
    ``run`` folder when that is unset)."""
    if os.geteuid() == 0:
        return SYSTEM_RUNTIME_DIR
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    return Path(base) / APP_DIR if base and os.path.isabs(base) else state_home() / "run"


def default_service_audit_path() -> Path:
    """The service's audit log when the config names none (every client's changes, by user)."""
    return state_home() / "service-audit.jsonl"


def default_ledger_path() -> Path:
    """The backup-chain ledger used when no ``--ledger`` is given."""
    return state_home() / "ledger.sqlite"
