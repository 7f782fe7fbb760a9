"""The names the ledger issues: its random id and, from it, every job id, node name and bitmap
name it creates in QEMU; and the owner tag ("host:pid") of the process working on a row."""

from __future__ import annotations

import os
import secrets
import socket

from tui.core.model.owners import OWNED_PREFIX

OWNER = f"{socket.gethostname()}:{os.getpid()}"


def new_ledger_id() -> str:
    """A random id, once per ledger: it makes our bitmap names, job ids and node names unique to
    this ledger (two ledgers on one QEMU never share one)."""
    return secrets.token_hex(4)


def owner_alive(owner: str | None) -> bool:
    """Is the process that owns a transaction still running? (Another host's: assume so.)"""
    if not owner:
        return False
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class IssuedNames:
    """The names one ledger issues, all starting with its :attr:`prefix`."""

    ledger_id: str

    @property
    def prefix(self) -> str:
        """``bt.<ledger id>.``: the start of every job id, node name and bitmap we create."""
        return f"{OWNED_PREFIX}{self.ledger_id}."

    def job_id(self, txn_id: int, index: int) -> str:
        """The backup job id of drive ``index`` of transaction ``txn_id``."""
        return f"{self.prefix}{txn_id}.{index}"

    def node_name(self, txn_id: int, index: int) -> str:
        """The target's format node name (its file node adds ``-f``); under QEMU's 31 bytes."""
        return f"{self.prefix}{txn_id}n{index}"

    def chain_bitmap(self, policy: str, txn_id: int) -> str:
        """The bitmap of the chain a policy's full backup in transaction ``txn_id`` starts:
        ``bt.<ledger id>.<policy>.c<txn>`` (a new chain never reuses an old name)."""
        return f"{self.prefix}{policy}.c{txn_id}"

    def issued(self, name: str) -> bool:
        """Did this ledger issue this job id, node name or bitmap name?"""
        return name.startswith(self.prefix)


# The companions of a chain's bitmap ``bt.<ledger>.<policy>.c<txn>``, on the same node: the
# *sentinel* (records the same writes, cleared only with a backup of the chain: always a subset of
# the chain's bitmap) and the *size canary* (every bit set when the chain starts, never recording:
# only a resize of the disk removes bits). ``~`` is not allowed in a policy name, so no chain
# bitmap is ever named like a companion.
SENTINEL, SIZE_CANARY = "sentinel", "size"


def companion_bitmap(chain_bitmap: str, role: str) -> str:
    """The name of one companion (``role``: :data:`SENTINEL` or :data:`SIZE_CANARY`) of a chain's
    bitmap: ``bt.<ledger>.<policy>~<role>.c<txn>``."""
    head, sep, txn = chain_bitmap.rpartition(".c")
    return f"{head}~{role}{sep}{txn}" if sep else f"{chain_bitmap}~{role}"


def companion_bitmaps(chain_bitmap: str) -> tuple[str, str]:
    """The sentinel and the size canary of a chain's bitmap."""
    return companion_bitmap(chain_bitmap, SENTINEL), companion_bitmap(chain_bitmap, SIZE_CANARY)


def with_companions(chain_bitmaps: set[str]) -> set[str]:
    """These chain bitmaps' names and their companions' names."""
    return chain_bitmaps.union(*(companion_bitmaps(name) for name in chain_bitmaps))
