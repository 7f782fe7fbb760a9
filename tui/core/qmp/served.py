"""What a client of bitmap-tui's service (``bitmap-tui serve``) learns from it: the rights the
service gives this client, in the greeting's ``QMP`` object under :data:`GREETING_KEY`
(``{"role": "operator" | "viewer", "user": NAME}``); and whether a service socket answers, with
which role."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

#: The key of the greeting's ``QMP`` object that tells a client its rights at the service.
GREETING_KEY = "bitmap-tui"
OPERATOR = "operator"
VIEWER = "viewer"
#: How long a session waits for a service socket's greeting before it connects directly.
PROBE_TIMEOUT = 2.0


def role_in(qmp: Any) -> str | None:
    """The role the service gave, from a greeting's ``QMP`` object; None: not a service (QEMU)."""
    rights = qmp.get(GREETING_KEY) if isinstance(qmp, dict) else None
    if not isinstance(rights, dict):
        return None
    role = rights.get("role")
    # A role this version does not know gives no more than a viewer's rights.
    return role if role in (OPERATOR, VIEWER) else VIEWER


@dataclass(frozen=True, slots=True)
class ServiceSocket:
    """A service socket that answered: the role it gave (None when it did not greet: its QEMU
    is away, or it refused this user)."""

    path: str
    role: str | None


def probe_service(path: str, timeout: float = PROBE_TIMEOUT) -> ServiceSocket | None:
    """The service socket at ``path`` and this user's role there; None when nothing listens.

    A VM whose QEMU is away still accepts (and closes), so the choice of the service over
    QEMU's own socket does not flip with QEMU."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError:
            return None
        try:
            line = sock.makefile("rb").readline(1 << 16)
            greeting = json.loads(line) if line.strip() else None
        except (OSError, ValueError):
            greeting = None
    qmp = greeting.get("QMP") if isinstance(greeting, dict) else None
    return ServiceSocket(path, role_in(qmp))


def refusal_in(message: Any) -> str | None:
    """The reason of a QMP error sent instead of a greeting (the service refusing a user)."""
    error = message.get("error") if isinstance(message, dict) else None
    desc = error.get("desc") if isinstance(error, dict) else None
    return desc if isinstance(desc, str) else None


