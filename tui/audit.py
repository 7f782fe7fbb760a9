"""Append-only audit log of every mutating QMP command (JSON lines, flushed and synced)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tui.errors import ConfigError
from tui.paths import default_audit_path


def open_audit(path: str | os.PathLike[str] | None = None) -> AuditLog:
    """Open (create) the audit log, or raise one ConfigError line: a session that may change a VM
    does not start if what it sends cannot be recorded."""
    target = Path(os.path.expanduser(os.fspath(path))) if path else default_audit_path()
    try:
        return AuditLog(target)
    except OSError as exc:
        raise ConfigError(f"audit log {target}: {exc.strerror or exc}") from None


class AuditLog:
    """One JSON object per line: time, connection, command, arguments, reply or error."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: every write lands at the end even with several writers; never truncated.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(
        self,
        connection: str,
        command: str,
        arguments: Any,
        *,
        reply: Any = None,
        error: str | None = None,
    ) -> None:
        entry = {
            "time": time.time(),
            "connection": connection,
            "command": command,
            "arguments": arguments,
            "reply": reply,
            "error": error,
        }
        line = json.dumps(entry, default=str, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
