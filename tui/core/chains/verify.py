"""Verify backup chains with qemu-img: ``check`` each image, ``compare`` a chain with a reference.

Runs on the machine that holds the images (a local QEMU host, or the backup server); qemu-img is
called with an argument list, never a shell.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

from tui.core.base.programs import QEMU_IMG
from tui.core.ledger.points_repository import PointsLedger
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageRow


@dataclass(frozen=True, slots=True)
class Check:
    """The verdict for one image (or one comparison)."""

    path: str
    ok: bool
    what: str  # "check" or "compare"
    detail: str


def _run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def check_image(path: str) -> Check:
    """``qemu-img check``: exit 0 is clean; 3 is leaked clusters only (harmless, reported)."""
    if not os.path.exists(path):
        return Check(path, False, "check", "missing")
    res = _run([QEMU_IMG, "check", "-f", "qcow2", "--output=json", path])
    detail = "no errors"
    try:
        info = json.loads(res.stdout) if res.stdout.strip() else {}
    except ValueError:
        info = {}
    if res.returncode == 3:
        detail = f"{info.get('leaks', '?')} leaked clusters (harmless)"
    elif res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines()
        errs = info.get("corruptions") if isinstance(info, dict) else None
        detail = f"{errs} corruptions" if errs else (lines[-1] if lines else f"exit {res.returncode}")
    return Check(path, res.returncode in (0, 3), "check", detail)


def compare_images(top: str, reference: str, *, force_share: bool = False) -> Check:
    """``qemu-img compare`` of an image *with its backing chain* against a reference.

    ``force_share`` (``-U``) is needed to read a disk that a running QEMU holds open.
    """
    argv = [QEMU_IMG, "compare"]
    if force_share:
        argv.append("-U")
    argv += ["-f", "qcow2", top, reference]
    res = _run(argv)
    text = (res.stdout or res.stderr).strip().splitlines()
    line = text[-1] if text else f"exit {res.returncode}"
    return Check(top, res.returncode == 0, "compare", f"vs {reference}: {line}")


def chain_paths(ledger: Ledger, top: ImageRow) -> list[str]:
    """The images from the full backup up to ``top``, oldest first."""
    holders = ledger.holders() if isinstance(ledger, PointsLedger) else {}
    if holders:  # after a prune merged images into their base (tui.core.chains.prune)
        from tui.core.chains.points import point_files

        return point_files(top, {i.id: i for i in ledger.images()}, holders)
    out: list[str] = []
    cur: ImageRow | None = top
    while cur is not None:
        out.append(cur.path)
        cur = ledger.image(cur.parent_id) if cur.parent_id is not None else None
    return out[::-1]


def verify_chain(
    ledger: Ledger, top: ImageRow, *, reference: str | None = None, live: bool = False
) -> list[Check]:
    """Check every image of ``top``'s chain; compare ``top`` with ``reference`` when given
    (``live``: the reference is the disk itself, opened shared)."""
    checks = [check_image(p) for p in chain_paths(ledger, top)]
    if reference is not None:
        checks.append(compare_images(top.path, reference, force_share=live))
    return checks
