"""Shared result types for operations and the small interface they need from a connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tui.core.base.errors import BitmapTuiError, QMPCommandError
from tui.core.qmp.link import Link

# What an operation needs from a connection: the one Connection protocol.
Target = Link


@dataclass(frozen=True, slots=True)
class Check:
    """Result of validating a request before sending: a refusal stops it, a warning does not."""

    refusal: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to a request. ``sent`` tells whether a command reached QEMU."""

    ok: bool
    message: str
    sent: bool = False
    warning: str | None = None
    # QEMU's error class when QEMU refused (its desc is ``message``, unchanged).
    error_class: str | None = None


def refused(reason: str) -> Outcome:
    return Outcome(ok=False, message=reason, sent=False)


async def run(
    target: Target, command: str, arguments: dict[str, Any], success: str, warning: str | None = None
) -> Outcome:
    """Send one command; map the typed errors to an Outcome (QEMU's desc is kept as it is)."""
    if target.read_only:
        # The core refuses too (ReadOnlyError); refusing here keeps the message uniform.
        return refused(f"read-only mode: {command} was not sent to {target.name}")
    try:
        await target.execute(command, arguments)
    except QMPCommandError as exc:
        return Outcome(ok=False, message=exc.desc, sent=True, warning=warning, error_class=exc.error_class)
    except BitmapTuiError as exc:
        return Outcome(ok=False, message=str(exc), sent=False, warning=warning)
    return Outcome(ok=True, message=success, sent=True, warning=warning)
