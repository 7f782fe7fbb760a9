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
    "speed", "persistent", "granularity", "verify", "full_every",
)
VERIFY_MODES = ("never", "after")
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


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
        verify = data.get("verify", "never")
        if verify not in VERIFY_MODES:
            raise ConfigError(f"{ctx}: 'verify' must be never or after, not {verify!r}")
        full_every = data.get("full_every")
        if full_every is not None and (
                not isinstance(full_every, int) or isinstance(full_every, bool) or full_every < 1):
            raise ConfigError(f"{ctx}: 'full_every' must be a positive integer (images per chain)")
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
            verify=verify,
            full_every=full_every,
        )


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
