"""The programs the core and the demo run, by the name looked up on PATH."""

from __future__ import annotations

#: QEMU's image tool: create, check, compare, commit, rebase, convert and info.
QEMU_IMG = "qemu-img"
