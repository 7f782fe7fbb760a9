"""Transports for remote QMP: SSH tunnels, TLS over TCP, and the plaintext-TCP guard.

QMP has no authentication: whoever reaches the socket controls the VM. So a remote QEMU is reached
either through the system's OpenSSH (``ssh://[user@]host[:port]/path/to/qmp.sock``: a unix-socket
forward into a private directory; keys, agent and known_hosts as the user has them) or over TCP with
TLS (``tls_ca`` / ``tls_cert`` / ``tls_key``). Plaintext TCP is only allowed to a loopback address
unless an endpoint says ``allow_insecure_tcp: true``.

An opener (see :data:`tui.core.qmp.probe.Opener`) returns what ``QMPClient.connect`` takes, an SSL
context or None, and a cleanup coroutine. Nothing here runs a shell: ssh gets an argument list.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import ssl as ssl_mod
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from qemu.qmp import QMPClient

from tui.core.base.errors import AddressError, ConfigError, ConnectError
from tui.core.qmp.address import Address

Cleanup = Callable[[], Awaitable[None]]
OpenResult = tuple[Any, ssl_mod.SSLContext | None, Cleanup]

# Per-endpoint options understood here (config keys and Endpoint.options keys).
TRANSPORT_OPTIONS = frozenset(
    {"tls_ca", "tls_cert", "tls_key", "allow_insecure_tcp", "ssh_config", "ssh_options"}
)

SSH = "ssh"
_EXPLICIT_PORT = re.compile(r"^ssh://(?:[^@/]*@)?(?:\[[^\]]*\]|[^:/\[]*):\d+/")


class TLSNudgingQMPClient(QMPClient):
    """A QMPClient that works with QEMU 7.2's TLS monitor.

    QEMU 7.2 leaves a command on a TLS chardev unanswered until more bytes arrive
    (docs/qmp-facts.md), so capability negotiation stalls forever. After each message we drain and
    send a lone ``"\\n"`` as a separate write (its own TLS record); QMP's parser ignores
    whitespace. On plain sockets nothing extra is sent.

    It overrides qemu.qmp's private ``_send`` and ``_bh_flush_writer`` and reads ``_writer``:
    qemu.qmp has no public hook for either, so pyproject pins qemu.qmp below 0.1.
    """

    def _tls(self) -> bool:
        return self._writer is not None and self._writer.get_extra_info("ssl_object") is not None

    async def _send(self, msg: Any) -> None:
        await super()._send(msg)
        if self._tls():
            assert self._writer is not None
            await self._writer.drain()
            self._writer.write(b"\n")
            await self._writer.drain()

    async def _bh_flush_writer(self) -> None:
        # qemu.qmp flushes by setting the write-buffer limits to (0, 0) and draining; Python's SSL
        # transport pauses writing as soon as size >= high (0 >= 0) and never resumes, so a TLS
        # disconnect would hang forever. A plain drain is enough: our writes are drained already.
        if not self._tls():
            await super()._bh_flush_writer()
            return
        if self._writer_task:
            await self._outgoing.join()
        if self._writer is not None:
            await self._writer.drain()


async def _nothing() -> None:
    return None


def _opt_str(options: Mapping[str, Any], key: str) -> str | None:
    value = options.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(f"option {key} must be a file path, not {type(value).__name__}")
    return os.path.expanduser(os.fspath(value))


def tls_context(options: Mapping[str, Any]) -> ssl_mod.SSLContext | None:
    """An SSL context from ``tls_ca`` / ``tls_cert`` / ``tls_key``, or None when none is set.

    The server certificate is always verified (against ``tls_ca``, or the system's CAs when only a
    client certificate is given) and its name must match the address's host.
    """
    ca, cert, key = (_opt_str(options, k) for k in ("tls_ca", "tls_cert", "tls_key"))
    if not (ca or cert or key):
        return None
    if key and not cert:
        raise ConfigError("tls_key is set but tls_cert is not")
    for label, path in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{label}: no such file: {path}")
    try:
        ctx = ssl_mod.create_default_context(cafile=ca)
        if cert:
            ctx.load_cert_chain(cert, key)
    except ssl_mod.SSLError as exc:
        raise ConfigError(f"TLS files unusable: {exc.reason or exc}") from None
    return ctx


def _insecure_allowed(options: Mapping[str, Any]) -> bool:
    value = options.get("allow_insecure_tcp", False)
    if not isinstance(value, bool):
        raise ConfigError("option allow_insecure_tcp must be true or false")
    return value


async def open_tcp(address: Address, options: Mapping[str, Any]) -> OpenResult:
    """TCP, with TLS when any ``tls_*`` option is set; plaintext only to loopback or when allowed."""
    ctx = tls_context(options)
    allowed = _insecure_allowed(options)  # validated even when unused: a typo must show
    if ctx is None and not address.is_loopback and not allowed:
        raise ConnectError(
            f"refused plaintext TCP to {address.host}:{address.port}: QMP has no authentication; "
            "use ssh://, TLS (tls_ca), or set allow_insecure_tcp: true"
        )
    return (address.host, address.port), ctx, _nothing


def ssh_argv(address: Address, local: str, options: Mapping[str, Any]) -> list[str]:
    """The ssh command line forwarding ``local`` (a unix socket) to the remote QMP socket."""
    if ":" in address.path:
        raise AddressError(f"bad address '{address.text}': the socket path may not contain ':'")
    argv = [
        SSH, "-N", "-T",
        "-o", "ExitOnForwardFailure=yes",
        # Never prompt on the operator's terminal (a password prompt would hang the console).
        "-o", "BatchMode=yes",
        # A dead link is noticed within ~30 s even if no command is running.
        "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3",
    ]
    config = _opt_str(options, "ssh_config")
    if config:
        argv += ["-F", config]
    extra = options.get("ssh_options") or []
    if not isinstance(extra, list) or not all(isinstance(o, str) and "=" in o for o in extra):
        raise ConfigError("option ssh_options must be a list of 'Key=Value' strings")
    for opt in extra:
        argv += ["-o", opt]
    # Only a port written in the URL: otherwise ~/.ssh/config's Port for that host applies.
    if address.port and _EXPLICIT_PORT.match(address.text):
        argv += ["-p", str(address.port)]
    if address.user:
        argv += ["-l", address.user]
    argv += ["-L", f"{local}:{address.path}", "--", address.host]
    return argv


def _ssh_error(lines: deque[str], returncode: int | None, host: str) -> str:
    text = "\n".join(lines)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return (
            f"ssh refused: the host key of {host} has changed (possible man-in-the-middle); "
            "check it and update known_hosts"
        )
    useful = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("@")]
    last = useful[-1] if useful else f"ssh exited with status {returncode}"
    return last if last.startswith("ssh: ") else f"ssh: {last}"


async def _drain(stream: asyncio.StreamReader | None, sink: deque[str]) -> None:
    # ssh's stderr must be read continuously, or a chatty ssh would block on a full pipe.
    if stream is None:
        return
    with contextlib.suppress(Exception):
        while line := await stream.readline():
            sink.append(line.decode(errors="replace").rstrip())


async def _stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def open_ssh(address: Address, options: Mapping[str, Any]) -> OpenResult:
    """Start ``ssh -N -L`` into a private directory and wait until the local socket exists."""
    if shutil.which(SSH) is None:
        raise ConnectError("ssh:// needs the OpenSSH client (ssh) installed")
    tmpdir = tempfile.mkdtemp(prefix="bitmap-tui-ssh-")  # mode 0700: only this user reaches it
    local = os.path.join(tmpdir, "qmp.sock")
    stderr_lines: deque[str] = deque(maxlen=50)
    proc: asyncio.subprocess.Process | None = None
    reader: asyncio.Task[None] | None = None

    async def cleanup() -> None:
        if proc is not None:
            await _stop_process(proc)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        shutil.rmtree(tmpdir, ignore_errors=True)

    try:
        argv = ssh_argv(address, local, options)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            # Own session: a Ctrl-C in the console does not kill the tunnel behind the app's back.
            start_new_session=True,
        )
        reader = asyncio.create_task(_drain(proc.stderr, stderr_lines), name="ssh-stderr")
        # The caller bounds this with its connect timeout (and cancellation runs cleanup).
        while not os.path.exists(local):  # noqa: ASYNC240 (a stat on a private tmp dir)
            if proc.returncode is not None:
                await asyncio.wait_for(asyncio.shield(reader), 2)
                raise ConnectError(_ssh_error(stderr_lines, proc.returncode, address.host))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.02)
    except BaseException:
        await cleanup()
        raise
    return local, None, cleanup


def make_opener(
    options: Mapping[str, Any] | None = None,
) -> Callable[[Address], Awaitable[OpenResult]]:
    """An opener for :class:`~tui.core.qmp.connection.Connection` honouring one endpoint's options."""
    # Bad option values are reported when connecting, so they fail this connection only.
    opts = dict(options or {})

    async def opener(address: Address) -> OpenResult:
        if address.kind == "unix":
            return address.path, None, _nothing
        if address.kind == "tcp":
            return await open_tcp(address, opts)
        if address.kind == "ssh":
            return await open_ssh(address, opts)
        if address.kind == "invalid":
            raise AddressError(address.error)
        raise AddressError(f"unknown address kind {address.kind!r}")

    return opener


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split endpoint options into (transport options, the rest for the Connection)."""
    transport = {k: v for k, v in options.items() if k in TRANSPORT_OPTIONS}
    rest = {k: v for k, v in options.items() if k not in TRANSPORT_OPTIONS}
    return transport, rest
