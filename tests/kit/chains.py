"""Helpers of the backup chain tests on a real QEMU: reference copies made by QEMU, image
comparisons, a history of backups, the command line in a subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from tui.core.chains.run import run_policy
from tui.core.ledger.rows import ImageState


async def reference(sb, drive: int, name: str) -> str:
    """A full copy of the disk as it is now, made by QEMU (flushed and closed when the job ends)."""
    path = str(sb.path(name))
    await sb.qmp("drive-backup", {"job-id": f"ref-{name}", "device": f"drive{drive}", "sync": "full",
                                  "target": path, "format": "qcow2", "mode": "absolute-paths"})
    for _ in range(600):
        if not any(j["id"] == f"ref-{name}" for j in await sb.qmp("query-jobs")):
            return path
        await asyncio.sleep(0.05)
    raise AssertionError("reference copy did not finish")


def damage(path):
    """Overwrite the qcow2 header (and its magic)."""
    with open(path, "r+b") as fh:
        fh.write(b"\0" * 512)


def same(a: str, b: str, fmt_a: str = "qcow2") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", "compare", "-f", fmt_a, "-F", "qcow2", a, b],
                          capture_output=True, text=True, check=False)


def absent(path: str) -> bool:
    return not os.path.lexists(path)


async def history(sb, conn, ledger, pol, rounds):
    """One backup per round, writes before each; the reference of each point (by image path)."""
    refs: dict[str, str] = {}
    for n, writes in enumerate(rounds, 1):
        for drive, offset, length, pattern in writes:
            await sb.write(drive, offset, length, pattern)
        res = await run_policy(conn, ledger, pol, timeout=60)
        for i, d in enumerate(res.drives):
            if d.state is ImageState.VALID:
                refs[d.path] = await reference(sb, i, f"ref{n}-{i}.qcow2")
    return refs


def cli(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "tui", *args], env=env, capture_output=True,
                          text=True, timeout=120, **kw)
