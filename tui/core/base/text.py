"""Text made safe to show on a terminal: one rule for everything bitmap-tui prints or draws.

Names, addresses, error messages and config values come from QEMU, the config or the user, and
may hold terminal control characters (QEMU accepts ESC, BEL, NUL and newlines in bitmap names).
Written raw they retitle the terminal, clear the screen or forge lines. :func:`shown` turns every
such character into a visible ``\\x1b``-style escape and cuts very long values, so one line of
output stays one short line. JSON output is not passed through here: JSON escapes them itself.
"""

from __future__ import annotations

# C0 controls (NUL..US, newline and tab included), DEL, the C1 controls (0x80-0x9f: CSI, OSC,
# ... in 8-bit form), the Unicode line and paragraph separators and the bidi overrides, which
# can make a line look different from what it holds.
_CONTROL = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029,
            *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPES = {c: (f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}") for c in _CONTROL}

#: Default cut for one value (a name, an address, a theme).
VALUE_LIMIT = 256
#: The cut for a whole output line or error message.
LINE_LIMIT = 2000
ELLIPSIS = "…"


def shown(text: object, limit: int = VALUE_LIMIT) -> str:
    """``text`` with every control character escaped, cut after ``limit`` characters with an
    ellipsis and the original length (``abc…(52428800 chars)``)."""
    value = text if isinstance(text, str) else str(text)
    cut = len(value) > limit
    head = value[:limit] if cut else value
    safe = head.translate(_ESCAPES)
    return f"{safe}{ELLIPSIS}({len(value)} chars)" if cut else safe


def is_plain(text: str) -> bool:
    """True when ``text`` holds no character :func:`shown` would escape."""
    return text.translate(_ESCAPES) == text


def shown_lines(text: object, limit: int = LINE_LIMIT) -> list[str]:
    """A multi-line text as safe lines: split on newlines, each line :func:`shown`."""
    value = text if isinstance(text, str) else str(text)
    return [shown(line, limit) for line in value.split("\n")]
