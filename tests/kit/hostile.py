"""Hostile names for the escape-rule tests, and what a terminal would act on in an output."""

from __future__ import annotations

# QEMU accepts each as a bitmap name: an OSC retitle with BEL and a screen clear, Rich markup,
# a newline, NUL/DEL/the 8-bit CSI, and a name of QEMU's 1,023 bytes ending in ESC.
HOSTILE = [
    "\x1b]0;PWNED\x07\x1b[2J",
    "[bold red]x[/]",
    "two\nlines",
    "c1\x9bcsi\x7fdel\x00nul",
    "L" * 1022 + "\x1b",
]


def raw_controls(text: str) -> list[str]:
    """The characters a terminal would act on: C0 but the newline, DEL, the 8-bit CSI."""
    return sorted({repr(c) for c in text
                   if (ord(c) < 0x20 and c != "\n") or c in ("\x7f", "\x9b")})
