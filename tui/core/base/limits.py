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

# A config, theme or transaction file is a few KiB; more than this is the wrong file (a disk
# image, /dev/zero). Files are read up to one byte past it, never whole.
TEXT_FILE_MAX_BYTES = 1024 * 1024
# A YAML document expands aliases into copies; more values than this (after expansion) is an
# alias bomb ("billion laughs"), refused while composing, before anything is built from it.
YAML_EXPANDED_VALUES_MAX = 100_000
# The widest field a file name pattern may ask for (``{n:04}``); a name is at most 255 bytes.
PATTERN_WIDTH_MAX = 255


def format_spec_problem(spec: str) -> str | None:
    """Why a ``{field:spec}`` of a name pattern would be refused (None: a width of at most
    :data:`PATTERN_WIDTH_MAX`, no nested fields). Checked before anything is formatted."""
    if "{" in spec or "}" in spec:
        return f"the format '{spec[:40]}' holds a nested field"
    digits = "".join(c if c.isdigit() else " " for c in spec).split()
    if any(len(d) > 3 or int(d) > PATTERN_WIDTH_MAX for d in digits):
        return f"a field width or precision past {PATTERN_WIDTH_MAX} in '{spec[:40]}'"
    return None
