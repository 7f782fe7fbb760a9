"""Backup policies: what to back up, where, and how the transaction completes."""

from __future__ import annotations

import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from croniter import croniter
from croniter.croniter import CroniterError

from tui.core.base.errors import ConfigError
from tui.core.base.limits import format_spec_problem
from tui.core.base.text import shown

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
    # Retention, chain length and freezing (see retention_settings); full_every 0: never.
    keep: Keep | None = None
    full_every: int = 0
    prune: str = "manual"
    freeze: bool = False
    # A cron expression (see check_schedule) and up to ``jitter`` seconds of random delay.
    schedule: str | None = None
    jitter: int = 0
    # Where this policy's notifications go besides the service's: Apprise URLs, a command's argv.
    notify: tuple[str, ...] = ()
    notify_command: tuple[str, ...] = ()

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

RETENTION_KEYS = ("keep", "full_every", "prune", "freeze")
KEEP_RULES = ("last", "daily", "weekly", "monthly")
PRUNE_MODES = ("manual", "auto")


@dataclass(frozen=True, slots=True)
class Keep:
    """Which points retention keeps (the Proxmox Backup Server rules): the ``last`` N points, and
    the newest point of each of the last N days, ISO weeks and months that have one."""

    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0


def retention_settings(data: Mapping[str, Any], ctx: str) -> dict[str, Any]:
    """``keep: {last, daily, weekly, monthly}``, ``full_every: N``, ``prune: manual|auto`` and
    ``freeze: true|false`` of one policy, checked, as Policy fields."""
    pre = f"{ctx}: " if ctx else ""
    out: dict[str, Any] = {}
    if "keep" in data:
        keep = data["keep"]
        if not isinstance(keep, Mapping) or not keep:
            raise ConfigError(f"{pre}'keep' must map some of {', '.join(KEEP_RULES)} to a count")
        for rule, n in keep.items():
            if rule not in KEEP_RULES:
                raise ConfigError(f"{pre}'keep' has unknown rule '{rule}' "
                                  f"(known: {', '.join(KEEP_RULES)})")
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ConfigError(f"{pre}'keep.{rule}' must be a non-negative integer")
        out["keep"] = Keep(**dict(keep))
    if "full_every" in data:
        n = data["full_every"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"{pre}'full_every' must be a positive integer (runs per chain)")
        out["full_every"] = n
    if "prune" in data:
        if data["prune"] not in PRUNE_MODES:
            raise ConfigError(f"{pre}'prune' must be manual or auto")
        if data["prune"] == "auto" and "keep" not in data:
            raise ConfigError(f"{pre}'prune: auto' needs 'keep'")
        out["prune"] = data["prune"]
    if "freeze" in data:
        if not isinstance(data["freeze"], bool):
            raise ConfigError(f"{pre}'freeze' must be true or false")
        out["freeze"] = data["freeze"]
    return out



SCHEDULE_KEYS = ("schedule", "jitter")
NOTIFY_KEYS = ("notify", "notify_command")


def check_schedule(expression: Any) -> str:
    """A cron expression of 5 fields (minute hour day month weekday), or 6 where the sixth is
    seconds (croniter's order); a ValueError saying what is wrong otherwise."""
    if not isinstance(expression, str) or len(expression.split()) not in (5, 6):
        raise ValueError("must be a cron expression of 5 fields, or 6 with seconds last")
    try:
        croniter(expression)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValueError(f"not a valid cron expression: {exc}") from None
    return expression


def render_name(pattern: str, **values: Any) -> str:
    """The file name for one image; ``timestamp`` defaults to now (UTC, compact ISO 8601)."""
    values.setdefault("timestamp", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    try:
        specs = [spec or "" for _, f, spec, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"pattern {shown(pattern)}: {exc}") from None
    problem = next((p for p in map(format_spec_problem, specs) if p), None)
    if problem:
        raise ConfigError(f"pattern {shown(pattern)}: {problem}")
    name = pattern.format(**values)
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise ConfigError(f"pattern {shown(pattern)} gives an unusable file name {shown(name)}")
    return name
