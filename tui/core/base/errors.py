"""Typed errors, one family per phase (address/connect, execute, validation, config).

Every error's ``str()`` is one readable line meant for the operator.
"""

from __future__ import annotations


class BitmapTuiError(Exception):
    """Base class: an error with a one-line, operator-readable message."""


class AddressError(BitmapTuiError, ValueError):
    """A QMP address in no known form."""


class ConnectError(BitmapTuiError):
    """Could not connect to (or negotiate with) a QMP server."""


class BusySocketError(ConnectError):
    """Another client holds the QMP socket (QEMU serves one monitor client at a time)."""


class NotConnectedError(BitmapTuiError):
    """A command was issued while the connection is down."""


class ConnectionLostError(BitmapTuiError):
    """The connection dropped before QEMU answered; the command's effect is unknown."""


class CommandTimeoutError(BitmapTuiError):
    """QEMU did not answer in time."""


class ReadOnlyError(BitmapTuiError):
    """A mutating command was refused because the app runs read-only."""


class AuditError(BitmapTuiError):
    """A change was not made because its intent could not be written to the audit log."""


class ValidationError(BitmapTuiError):
    """A request refused by the app before anything was sent to QEMU."""


class ConfigError(BitmapTuiError):
    """A config, theme or transaction file that cannot be used."""


class QMPCommandError(BitmapTuiError):
    """QEMU answered a command with an error: keeps QEMU's ``class`` and ``desc`` as they are."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(desc)
        self.command = command
        self.error_class = error_class
        self.desc = desc

    def __str__(self) -> str:
        return self.desc
