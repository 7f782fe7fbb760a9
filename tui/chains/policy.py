"""Backup policies: what to back up, where, and how the transaction completes."""

from __future__ import annotations

import re
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tui.errors import ConfigError

COMPLETION_MODES = ("individual", "grouped")
# Placeholders a file name pattern may use (see render_name).
# Placeholders a file name pattern may use (the same as tui/config.py's): {n} counts the drive's
# images in the ledger (1, 2, ...), {txn} is the ledger's transaction number.
PATTERN_FIELDS = frozenset(
    {"drive", "kind", "n", "timestamp", "connection", "policy", "bitmap", "txn", "node"}
)
DEFAULT_PATTERN = "{drive}-{kind}-{n}.qcow2"
_FIELDS = (
    "connection", "drives", "bitmap", "target_dir", "pattern", "format", "completion_mode",
    "speed", "persistent", "granularity", "keep", "full_every", "prune", "freeze",
)
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True, slots=True)
class Policy:
    """One backup policy.

    ``drives`` are node names or device names on ``connection``; ``target_dir`` is a directory
    *on the QEMU host* (targets are created by QEMU itself); ``pattern`` names each image.
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
    # Retention, chain length and freezing (see retention_settings).
    keep: Keep | None = None
    full_every: int = 0
    prune: str = "manual"
    freeze: bool = False

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

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any], where: str = "policy") -> Policy:
        """Validate a mapping (from YAML config); errors name the policy and the key."""
        ctx = f"{where} '{name}'"
        if not isinstance(data, Mapping):
            raise ConfigError(f"{ctx}: expected a mapping of settings")
        unknown = sorted(set(data) - set(_FIELDS) - {"name"})
        if unknown:
            raise ConfigError(f"{ctx}: unknown key '{unknown[0]}' (known: {', '.join(_FIELDS)})")
        if not _NAME_OK.match(name):
            raise ConfigError(f"{ctx}: a policy name uses letters, digits, '.', '_', '+', '-'")

        def text(key: str, default: str | None = None) -> str:
            value = data.get(key, default)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{ctx}: '{key}' must be a non-empty string")
            return value

        drives_raw = data.get("drives")
        if isinstance(drives_raw, str):
            drives_raw = [drives_raw]
        if not isinstance(drives_raw, list) or not drives_raw or not all(
            isinstance(d, str) and d.strip() for d in drives_raw
        ):
            raise ConfigError(f"{ctx}: 'drives' must be a non-empty list of node or device names")
        if len(set(drives_raw)) != len(drives_raw):
            raise ConfigError(f"{ctx}: 'drives' names a drive twice")
        bitmap = text("bitmap", "bitmap-tui")
        if len(bitmap.encode()) > 1023:
            raise ConfigError(f"{ctx}: 'bitmap' is longer than QEMU's 1023 bytes")
        mode = text("completion_mode", "individual")
        if mode not in COMPLETION_MODES:
            raise ConfigError(f"{ctx}: 'completion_mode' must be individual or grouped, not '{mode}'")
        fmt = text("format", "qcow2")
        if fmt != "qcow2":
            # Incrementals need a backing file, which only qcow2 records.
            raise ConfigError(f"{ctx}: 'format' must be qcow2 (incrementals need backing files)")
        pattern = text("pattern", DEFAULT_PATTERN)
        check_pattern(pattern, ctx)
        if len(drives_raw) > 1 and "{drive}" not in pattern:
            raise ConfigError(f"{ctx}: 'pattern' needs {{drive}}: the policy has several drives")
        speed = data.get("speed", 0)
        if not isinstance(speed, int) or isinstance(speed, bool) or speed < 0:
            raise ConfigError(f"{ctx}: 'speed' must be a non-negative integer (bytes per second)")
        persistent = data.get("persistent", False)
        if not isinstance(persistent, bool):
            raise ConfigError(f"{ctx}: 'persistent' must be true or false")
        gran = data.get("granularity")
        if gran is not None and (
            not isinstance(gran, int) or isinstance(gran, bool) or gran < 512 or gran & (gran - 1)
            or gran > 2**26
        ):
            raise ConfigError(f"{ctx}: 'granularity' must be a power of two from 512 to 64 MiB")
        return cls(
            name=name,
            connection=text("connection"),
            drives=tuple(drives_raw),
            bitmap=bitmap,
            target_dir=text("target_dir"),
            pattern=pattern,
            format=fmt,
            completion_mode=mode,
            speed=speed,
            persistent=persistent,
            granularity=gran,
            **retention_settings({k: data[k] for k in RETENTION_KEYS if k in data}, ctx),
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


def check_pattern(pattern: str, ctx: str = "pattern") -> None:
    """A file name pattern: known ``{placeholders}`` only, no directories."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"{ctx}: bad 'pattern' {pattern!r}: {exc}") from None
    for f in fields:
        if f not in PATTERN_FIELDS:
            raise ConfigError(
                f"{ctx}: 'pattern' uses unknown {{{f}}} (known: {', '.join(sorted(PATTERN_FIELDS))})"
            )
    if "/" in pattern or "\\" in pattern:
        raise ConfigError(f"{ctx}: 'pattern' is a file name; put directories in 'target_dir'")
    if "txn" not in fields and "timestamp" not in fields and "n" not in fields:
        # Without one of these, two runs would name the same file and QEMU would overwrite it.
        raise ConfigError(f"{ctx}: 'pattern' needs {{n}}, {{timestamp}} or {{txn}} so names stay unique")


def render_name(pattern: str, **values: Any) -> str:
    """The file name for one image; ``timestamp`` defaults to now (UTC, compact ISO 8601)."""
    values.setdefault("timestamp", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    name = pattern.format(**values)
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise ConfigError(f"pattern {pattern!r} gives an unusable file name {name!r}")
    return name


def policies_from(data: Any, where: str = "config") -> dict[str, Policy]:
    """``policies:`` as a mapping name → settings, or a list of settings with ``name``."""
    out: dict[str, Policy] = {}
    if data is None:
        return out
    if isinstance(data, Mapping):
        items = list(data.items())
    elif isinstance(data, list):
        items = []
        for i, entry in enumerate(data):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise ConfigError(f"{where}: policies[{i}] needs a 'name'")
            items.append((entry["name"], entry))
    else:
        raise ConfigError(f"{where}: 'policies' must be a mapping or a list")
    for name, entry in items:
        if name in out:
            raise ConfigError(f"{where}: two policies are named '{name}'")
        out[str(name)] = Policy.from_dict(str(name), entry, where=f"{where}: policy")
    return out
