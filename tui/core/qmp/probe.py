"""Connecting and probing one QEMU: open the transport, wait for the greeting, read the version
and the commands; and the one line an operator reads when any of it fails."""

from __future__ import annotations

import asyncio
import errno
import os
import ssl as ssl_mod
import stat
from collections.abc import Awaitable, Callable
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.error import ProtocolError
from qemu.qmp.message import DeserializationError, UnexpectedTypeError
from qemu.qmp.protocol import ConnectError as QMPConnectError
from qemu.qmp.qmp_client import GreetingError, NegotiationError, ServerParseError

from tui.core.base.errors import AddressError, BusySocketError, ServiceRefusedError
from tui.core.model.parse import parse_version
from tui.core.model.state import QemuVersion
from tui.core.qmp.address import Address

# Opens the transport: returns what QMPClient.connect() takes, an SSL context or None, and a
# cleanup coroutine (e.g. closing an SSH tunnel). Remote transports plug in here.
Opener = Callable[[Address], Awaitable[tuple[Any, ssl_mod.SSLContext | None, Callable[[], Awaitable[None]]]]]


# What connect() on a unix socket whose listen queue is full reports: EAGAIN, or EINVAL as
# qemu.qmp's asyncio path turns it.
_QUEUE_FULL = frozenset({errno.EAGAIN, errno.EINVAL})


def busy_error(client: QMPClient, exc: BaseException, where: str,
               timeout: float) -> BusySocketError | None:
    """The error to report when ``exc`` (from connecting ``client``) means another client holds
    the socket or QEMU does not answer, else None.

    QEMU serves one QMP client per monitor and leaves later ones in the listen queue: the
    connect is accepted but no greeting comes; once the queue is full connect() fails at once.
    A stopped (SIGSTOP) or hung QEMU looks the same from here: the kernel accepts, nobody
    greets."""
    inner = exc.exc if isinstance(exc, QMPConnectError) else exc
    if isinstance(inner, OSError) and inner.errno in _QUEUE_FULL:
        return BusySocketError(f"busy: another client holds {where} (its queue is full)")
    if isinstance(exc, TimeoutError) and getattr(client, "transport_open", False):
        return BusySocketError(f"timed out: connected to {where} but no QMP greeting within "
                               f"{timeout:g} s: another client holds it (QEMU serves one at a "
                               "time), or QEMU is stopped or hung")
    return None


def _not_qmp(inner: BaseException | None) -> str:
    if isinstance(inner, EOFError):
        return "not a QMP server (it closed the connection without a QMP greeting)"
    if isinstance(inner, (TimeoutError, asyncio.TimeoutError)):
        return "timed out: no QMP greeting"
    return "not a QMP server (it sent something that is not a QMP greeting)"


def describe_error(exc: BaseException) -> str:
    """One line for the operator from any connect-time exception."""
    if isinstance(exc, QMPConnectError):
        inner = exc.exc
        if isinstance(inner, (GreetingError, NegotiationError)):
            return _not_qmp(inner.exc)
        if isinstance(inner, (ProtocolError, UnicodeDecodeError)):
            return "not a QMP server (it sent bytes that are not QMP JSON)"
        return describe_error(inner)
    if isinstance(exc, (GreetingError, NegotiationError)):
        return _not_qmp(exc.exc)
    # Mid-session protocol errors (the session is dropped and made again).
    if isinstance(exc, (DeserializationError, UnicodeDecodeError)):
        return "the server sent something that is not JSON"
    if isinstance(exc, UnexpectedTypeError):
        return "the server sent JSON that is not a QMP message"
    if isinstance(exc, ServerParseError):
        return "QEMU could not parse what was sent (protocol out of step)"
    if isinstance(exc, FileNotFoundError):
        return f"no such socket: {exc.filename}" if exc.filename else "no such socket"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing is listening there)"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}" if exc.filename else "permission denied"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timed out: the server did not answer"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, AddressError | BusySocketError | ServiceRefusedError):
        return str(exc)
    if isinstance(exc, ssl_mod.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, asyncio.LimitOverrunError | ValueError) and "limit" in str(exc).lower():
        return "the server sent a message larger than 10 MB"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text


def explain(address: Address, exc: BaseException) -> str:
    """:func:`describe_error`, told more exactly for a unix socket (a file that is not a socket,
    a socket nobody listens on)."""
    text = describe_error(exc)
    if address.kind == "unix":
        path = address.path
        if text == "no such socket":
            return f"no such socket: {path}"
        if text.startswith("connection refused") and os.path.exists(path):
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                return f"not a socket: {path}"
            return f"connection refused: no QEMU is listening on {path}"
    return text


async def handshake(client: QMPClient, target: Any, ssl: ssl_mod.SSLContext | None,
                    address: Address, timeout: float) -> tuple[QemuVersion | None, frozenset[str]]:
    """Connect ``client`` to the opened ``target`` and read QEMU's version and commands, each
    step within ``timeout``; a socket another client holds is a :class:`BusySocketError`."""
    try:
        await asyncio.wait_for(client.connect(target, ssl=ssl), timeout)
    except Exception as exc:
        where = address.path if address.kind == "unix" else str(address)
        busy = busy_error(client, exc, where, timeout)
        if busy is None:
            raise
        raise busy from None
    version = parse_version(await asyncio.wait_for(client.execute("query-version"), timeout))
    raw_cmds = await asyncio.wait_for(client.execute("query-commands"), timeout)
    commands = frozenset(
        c["name"] for c in (raw_cmds if isinstance(raw_cmds, list) else []) if isinstance(c, dict) and "name" in c
    )
    return version, commands
