"""QEMU's limits on bitmaps, in one place (see docs/qmp-facts.md, "Bitmap commands")."""

from __future__ import annotations

from tui.core.base.format import human_bytes

# QEMU's BDRV_BITMAP_MAX_NAME_SIZE: a bitmap name is at most this many bytes (UTF-8).
BITMAP_NAME_MAX_BYTES = 1023
GRANULARITY_MIN = 512
# QEMU accepts up to 2^31 (uint32); more than 2 GiB per bit is nonsense for a disk.
GRANULARITY_MAX = 2**31


def bitmap_name_problem(name: str) -> str | None:
    """Why QEMU would refuse ``name`` as a bitmap name (None: it would not)."""
    if not name:
        return "the bitmap name cannot be empty"
    if len(name.encode()) > BITMAP_NAME_MAX_BYTES:
        return f"the bitmap name is longer than QEMU's {BITMAP_NAME_MAX_BYTES} bytes"
    return None


def granularity_problem(granularity: object) -> str | None:
    """Why a bitmap granularity would be refused (None: a power of two in range)."""
    if not isinstance(granularity, int) or isinstance(granularity, bool):
        return f"granularity {granularity!r} is not a whole number of bytes"
    if granularity < GRANULARITY_MIN or granularity > GRANULARITY_MAX:
        return (f"granularity {granularity} is outside {human_bytes(GRANULARITY_MIN)}–"
                f"{human_bytes(GRANULARITY_MAX)}")
    if granularity & (granularity - 1):
        return f"granularity {granularity} is not a power of two"
    return None
