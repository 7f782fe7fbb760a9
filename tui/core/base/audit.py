"""Write-ahead audit log of every change bitmap-tui makes: mutating QMP commands and file deletions.

JSON lines, appended (``O_APPEND``) and fsynced one by one. Each change is two lines linked by
an ``id``: the *intent*, written and synced before the command is sent (or the file deleted), and
the *outcome*, written after (QEMU's reply, QEMU's error, a timeout, a lost connection, an OS
error). An intent without an outcome means: sent (or attempted), result not recorded — the
process died or the log could not be written afterwards. When the intent cannot be written the
change is not made: :class:`AuditError` says so in one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tui.core.base.errors import AuditError, ConfigError
from tui.core.base.paths import default_audit_path

INTENT = "intent"
OUTCOME = "outcome"
# The "command" of a file deletion's entries (it is not a QMP command).
UNLINK = "unlink"


def open_audit(path: str | os.PathLike[str] | None = None) -> AuditLog:
    """Open (create) the audit log, or raise one ConfigError line: a session that may change a VM
    does not start if what it sends cannot be recorded."""
    target = Path(os.path.expanduser(os.fspath(path))) if path else default_audit_path()
    try:
        return AuditLog(target)
    except OSError as exc:
        raise ConfigError(f"audit log {target}: {exc.strerror or exc}") from None


class AuditLog:
    """The log file; :meth:`intent` before a change, :meth:`outcome` after it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: every write lands at the end even with several writers; never truncated.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # Outcomes that could not be written (the change was made; its intent line stands).
        self.lost_outcomes = 0

    def _append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, default=str, separators=(",", ":")) + "\n").encode()
        written = os.write(self._fd, line)
        if written != len(line):  # a short write on a nearly full disk: not recorded
            raise OSError(28, os.strerror(28))
        os.fsync(self._fd)

    def intent(self, connection: str, command: str, arguments: Any, **who: Any) -> str:
        """Record that ``command`` is about to be sent; return the id its outcome will carry.
        ``who`` says on whose behalf (the service adds the client's user, uid and pid).

        Raises :class:`AuditError` (nothing may be sent then) when the line cannot be written."""
        entry_id = uuid.uuid4().hex[:16]
        entry = {"id": entry_id, "phase": INTENT, "time": time.time(),
                 "connection": connection, "command": command, "arguments": arguments, **who}
        try:
            self._append(entry)
        except OSError as exc:
            raise AuditError(f"not sent: {command} to {connection}: the audit log {self.path} "
                             f"cannot be written ({exc.strerror or exc})") from None
        return entry_id

    def outcome(self, entry_id: str, *, reply: Any = None, error: str | None = None) -> bool:
        """Record what became of intent ``entry_id``; False when the line could not be written.

        Never raises: the change has happened, and saying otherwise would be wrong."""
        entry = {"id": entry_id, "phase": OUTCOME, "time": time.time(),
                 "reply": reply, "error": error}
        try:
            self._append(entry)
        except OSError:
            self.lost_outcomes += 1
            return False
        return True

    @contextlib.contextmanager
    def change(self, connection: str, command: str, arguments: Any) -> Iterator[None]:
        """``with log.change(...)``: a local change (a file deleted or rewritten) between its
        intent (written first; AuditError and nothing done when it cannot be) and its outcome."""
        entry_id = self.intent(connection, command, arguments)
        try:
            yield
        except BaseException as exc:
            self.outcome(entry_id, error=f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}")
            raise
        self.outcome(entry_id, reply={})

    def unlink(self, path: str, *, connection: str) -> None:
        """Delete ``path`` with an intent before and an outcome after (errors re-raised)."""
        with self.change(connection, UNLINK, {"path": path}):
            os.unlink(path)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_entries(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every entry of an audit log, in order (intent and outcome lines)."""
    text = Path(path).read_text() if Path(path).exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def changes(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Each change once: its intent with ``reply``/``error`` from its outcome (None if none)."""
    entries = read_entries(path)
    outcomes = {e["id"]: e for e in entries if e.get("phase") == OUTCOME}
    out = []
    for e in entries:
        if e.get("phase") != INTENT:
            continue
        done = outcomes.get(e["id"])
        out.append({**e, "outcome": done is not None,
                    "reply": done.get("reply") if done else None,
                    "error": done.get("error") if done else None})
    return out
