"""One error family, grouped by the phase that failed. Every error's ``str()`` is one readable
line meant for the operator; a caller decides what to do by the class, never by the text.

- :class:`ConfigError`: a config, theme, transaction file or command-line value cannot be used.
- :class:`ConnectError`: no QMP link (nothing was sent).
- :class:`RefusedError`: QEMU or the app said no; nothing happened.
- :class:`OutcomeUnknownError`: the link dropped or timed out around a command; QEMU may have
  acted on it, so the caller finds out (reconnect, query) before it says more.
- :class:`LedgerError`: the backup-chain ledger cannot be read or written.
- :class:`LocalFileError`: an image or target file on this machine (qemu-img, create, delete).
- :class:`AgentError`: the guest agent (freeze, thaw) failed or did not answer.
"""

from __future__ import annotations


class BitmapTuiError(Exception):
    """Base class: an error with a one-line, operator-readable message."""


# ---------------------------------------------------------------------- config


class ConfigError(BitmapTuiError):
    """A config, theme or transaction file (or an option) that cannot be used."""


class AddressError(ConfigError, ValueError):
    """A QMP address in no known form."""


# ---------------------------------------------------------------------- connect


class ConnectError(BitmapTuiError):
    """Could not connect to (or negotiate with) a QMP server; nothing was sent."""


class BusySocketError(ConnectError):
    """Another client holds the QMP socket (QEMU serves one monitor client at a time)."""


class ServiceRefusedError(ConnectError):
    """bitmap-tui's service refused this user at connect (not an operator or viewer)."""


class NotConnectedError(ConnectError):
    """A command was issued while the connection is down; it was not sent."""


# ---------------------------------------------------------------------- refused: nothing happened


class RefusedError(BitmapTuiError):
    """QEMU or the app said no before anything happened."""


class QMPCommandError(RefusedError):
    """QEMU answered a command with an error: keeps QEMU's ``class`` and ``desc`` as they are."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(desc)
        self.command = command
        self.error_class = error_class
        self.desc = desc

    def __str__(self) -> str:
        return self.desc


class ValidationError(RefusedError):
    """A request refused by the app before anything was sent to QEMU."""


class ReadOnlyError(RefusedError):
    """A mutating command was refused because the app runs read-only."""


class AuditError(RefusedError):
    """A change was not made because its intent could not be written to the audit log."""


# ---------------------------------------------------------------------- outcome unknown


class OutcomeUnknownError(BitmapTuiError):
    """The command may have reached QEMU, but its answer did not reach us."""


class ConnectionLostError(OutcomeUnknownError):
    """The connection dropped before QEMU answered; the command's effect is unknown."""


class CommandTimeoutError(OutcomeUnknownError):
    """QEMU did not answer in time; the command's effect is unknown."""


# ---------------------------------------------------------------------- ledger, files, agent


class LedgerError(BitmapTuiError):
    """The backup-chain ledger cannot be opened, read or written."""


class LocalFileError(BitmapTuiError):
    """An image or target file could not be created, checked, read or deleted."""


class AgentError(BitmapTuiError):
    """The guest agent failed, refused or did not answer."""
