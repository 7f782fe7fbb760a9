"""The small local demo QEMU that ``bitmap-tui`` opens when no connection is given.

One function, :func:`default_demo`, so a richer demo can replace it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tui.sandbox import Sandbox


@asynccontextmanager
async def default_demo() -> AsyncIterator[list[str]]:
    """Start a scratch QEMU with two drives and a few bitmaps; yield ``--connect`` strings.

    The QEMU and its scratch directory are removed on exit, also after ctrl+c or an error.
    """
    sb = Sandbox(drives=2)
    try:
        await sb.start()
        await sb.add_bitmap(0, "bitmap0")
        await sb.write(0, 0, "4M")
        await sb.add_bitmap(0, "nightly", disabled=True)
        await sb.add_bitmap(1, "bitmap0", granularity=4096)
        await sb.write(1, "16M", "1M")
        yield [f"demo={sb.address}"]
    finally:
        await sb.close()
