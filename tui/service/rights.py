"""Who a client is (its peer credentials, never anything it says) and what it may do.

The kernel tells a unix socket's server the uid, gid and pid of the process at the other end
(``SO_PEERCRED``); the uid's supplementary groups come from the system's user and group
databases. ``service.operators`` may send any command, ``service.viewers`` only commands that
change nothing; root and the service's own user are operators; anyone else is refused.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from enum import StrEnum

from tui.core.config import Principal
from tui.core.qmp.served import OPERATOR, VIEWER


class Role(StrEnum):
    """What a client may do: any command, or only those that change nothing."""

    OPERATOR = OPERATOR
    VIEWER = VIEWER


@dataclass(frozen=True, slots=True)
class Peer:
    """The process at the other end of a client socket."""

    uid: int
    gid: int
    pid: int
    user: str
    groups: frozenset[str]


def peer_of(sock: socket.socket) -> Peer:
    """The peer's credentials (``SO_PEERCRED``) and its user's groups."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    try:
        entry = pwd.getpwuid(uid)
        user = entry.pw_name
        gids = set(os.getgrouplist(user, entry.pw_gid)) | {gid}
    except KeyError:  # a uid with no name (a container's, a deleted user's)
        user, gids = str(uid), {gid}
    return Peer(uid, gid, pid, user, frozenset(_group_names(gids)))


def _group_names(gids: set[int]) -> set[str]:
    names = set()
    for gid in gids:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


def _matches(peer: Peer, principals: tuple[Principal, ...]) -> bool:
    return any(p.name == peer.user if p.kind == "user" else p.name in peer.groups
               for p in principals)


def role_of(peer: Peer, operators: tuple[Principal, ...],
            viewers: tuple[Principal, ...]) -> Role | None:
    """The peer's role, or None: it may not use the service."""
    if peer.uid in (0, os.geteuid()) or _matches(peer, operators):
        return Role.OPERATOR
    if _matches(peer, viewers):
        return Role.VIEWER
    return None
