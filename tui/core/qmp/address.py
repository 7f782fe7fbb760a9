"""QMP addresses: ``unix:/path``, a bare path, ``tcp:HOST:PORT``, ``HOST:PORT``, ``ssh://...``."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from tui.core.base.errors import AddressError

_HOSTPORT = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})$")
_SSH = re.compile(
    r"^ssh://(?:(?P<user>[A-Za-z0-9_.-]+)@)?(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9_.-]+))"
    r"(?::(?P<port>\d{1,5}))?(?P<path>/.+)$"
)


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed QMP address. ``kind`` is ``unix``, ``tcp`` or ``ssh``."""

    kind: str
    text: str
    path: str = ""
    host: str = ""
    port: int = 0
    user: str = ""
    # Set for kind "invalid": why the text is not an address (the connection shows it as failed).
    error: str = ""

    @property
    def default_name(self) -> str:
        """A connection name derived from the address (the socket file's name without suffix)."""
        if self.kind in ("unix", "ssh"):
            base = os.path.basename(self.path.rstrip("/")) or self.path
            stem = base.rsplit(".", 1)[0] if "." in base else base
            return stem if self.kind == "unix" else f"{self.host}:{stem}"
        if self.kind == "invalid":
            return self.text or "invalid"
        return f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.kind != "tcp":
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return self.text


def _port(text: str, value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise AddressError(f"bad address '{text}': port {port} is not in 1-65535")
    return port


def parse_address(text: str) -> Address:
    """Parse one address; raise :class:`AddressError` with a one-line reason otherwise."""
    raw = text.strip()
    if not raw:
        raise AddressError("empty address: use unix:/path, /path, tcp:HOST:PORT or HOST:PORT")
    if not raw.isprintable():
        # Quoted, so the message stays one line and shows what was really there.
        raise AddressError(f"bad address {raw!r}: it contains control characters")
    text = raw
    if raw.startswith("unix:"):
        path = raw[5:]
        if not path:
            raise AddressError(f"bad address '{text}': no socket path after 'unix:'")
        return Address("unix", raw, path=path)
    if raw.startswith("ssh://"):
        m = _SSH.match(raw)
        if not m:
            raise AddressError(
                f"bad address '{text}': expected ssh://[user@]host[:port]/path/to/qmp.sock"
            )
        return Address(
            "ssh",
            raw,
            path=m["path"],
            host=m["v6"] or m["host"],
            port=_port(text, m["port"]) if m["port"] else 22,
            user=m["user"] or "",
        )
    rest = raw[4:] if raw.startswith("tcp:") else raw
    m = _HOSTPORT.match(rest)
    if m and not rest.startswith(("/", ".")):
        return Address("tcp", raw, host=m["v6"] or m["host"], port=_port(text, m["port"]))
    if raw.startswith("tcp:"):
        raise AddressError(f"bad address '{text}': expected tcp:HOST:PORT")
    if "/" in raw or raw.endswith((".sock", ".socket", ".qmp")):
        return Address("unix", raw, path=raw)
    raise AddressError(
        f"bad address '{text}': use unix:/path, a path containing '/', tcp:HOST:PORT or HOST:PORT"
    )


def parse_address_lenient(text: str) -> Address:
    """Like :func:`parse_address`, but a bad address becomes kind ``invalid`` carrying its error,
    so one typo in a fleet fails that connection only."""
    try:
        return parse_address(text)
    except AddressError as exc:
        return Address("invalid", text, error=str(exc))
