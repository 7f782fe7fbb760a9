"""Backup policies: what to back up, where, and how the transaction completes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tui.errors import ConfigError

COMPLETION_MODES = ("individual", "grouped")
# Placeholders a file name pattern may use: {n} counts the drive's images in the ledger
# (1, 2, ...), {txn} is the ledger's transaction number. The config loader validates policies.
PATTERN_FIELDS = frozenset(
    {"drive", "kind", "n", "timestamp", "connection", "policy", "bitmap", "txn", "node"}
)
DEFAULT_PATTERN = "{drive}-{kind}-{n}.qcow2"
VERIFY_MODES = ("never", "after")


@dataclass(frozen=True, slots=True)
class Policy:
    """One backup policy.

    ``drives`` are node names or device names on ``connection``; ``target_dir`` is a directory
    *on the QEMU host* (targets are created by QEMU itself); ``pattern`` names each image.

    ``bitmap`` is only the name of a chain from before owned bitmap names: the bitmaps a policy
    creates are named by the ledger (``bt.<ledger id>.<policy>.c<txn>``), and a chain on the old
    name is adopted by taking a full backup. ``verify: after`` compares each new chain with the
    disk (``qemu-img compare``) when the disk can be read here; ``full_every: N`` starts a new
    chain once the current one has N images.
    """

    name: str
    connection: str
    drives: tuple[str, ...]
    bitmap: str = "bitmap-tui"
    target_dir: str = "."
    pattern: str = DEFAULT_PATTERN
    format: str = "qcow2"
    completion_mode: str = "individual"
    # Bytes per second per job; 0 = unlimited.
    speed: int = 0
    # Persistent bitmaps survive a clean QEMU restart (qcow2 sources only).
    persistent: bool = False
    granularity: int | None = None
    verify: str = "never"
    full_every: int | None = None

    def file_name(
        self, *, drive: str, kind: str, n: int, timestamp: str = "", connection: str = "",
        txn: int | str = "", node: str = "",
    ) -> str:
        """The target image's file name, e.g. ``drive0-incr-3.qcow2``."""
        return render_name(
            self.pattern, drive=drive, kind=kind, n=n, timestamp=timestamp,
            connection=connection or self.connection, policy=self.name, bitmap=self.bitmap,
            txn=txn, node=node or drive,
        )


def render_name(pattern: str, **values: Any) -> str:
    """The file name for one image; ``timestamp`` defaults to now (UTC, compact ISO 8601)."""
    values.setdefault("timestamp", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    name = pattern.format(**values)
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise ConfigError(f"pattern {pattern!r} gives an unusable file name {name!r}")
    return name
