"""Helpers of the transaction tests: a connection model with every kind of drive and bitmap,
backup actions, the installed ``bitmap-tui apply``."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

from tui.core.model.state import Bitmap, ConnectionModel, Job, LinkState, Node
from tui.core.txn import Action

EXE = shutil.which("bitmap-tui", path=str(Path(sys.executable).parent)) or "bitmap-tui"


def bm(name: str, count: int = 0, busy: bool = False, inconsistent: bool = False,
       recording: bool = True) -> Bitmap:
    return Bitmap(name=name, granularity=65536, count=count, recording=recording, busy=busy,
                  inconsistent=inconsistent, persistent=inconsistent)


def model(**kw: Any) -> ConnectionModel:
    nodes = {
        "disk0": Node("disk0", "qcow2", "/img/drive0.qcow2", 64 << 20, device="drive0",
                      bitmaps=(bm("bitmap0", 458752), bm("hot", busy=True),
                               bm("broken", inconsistent=True, recording=False))),
        "disk1": Node("disk1", "qcow2", "/img/drive1.qcow2", 64 << 20, device="drive1",
                      bitmaps=(bm("bitmap1", 458752),)),
        "disk2": Node("disk2", "qcow2", "/img/drive2.qcow2", 64 << 20, device="drive2"),
        "raw0": Node("raw0", "raw", "/img/raw.img", 64 << 20),
        "tgt0": Node("tgt0", "qcow2", "/backups/t0.qcow2", 64 << 20),
        "tgt1": Node("tgt1", "qcow2", "/backups/t1.qcow2", 64 << 20),
    }
    jobs = {"running": Job("running", "backup", "running", node="disk2")}
    base = dict(name="vm0", address="unix:/x", state=LinkState.CONNECTED, nodes=nodes, jobs=jobs)
    base.update(kw)
    return ConnectionModel(**base)  # type: ignore[arg-type]


def incr(dev: str = "drive0", bitmap: str | None = "bitmap0", target: str = "/b/d0.qcow2",
         **extra: Any) -> Action:
    data: dict[str, Any] = {"device": dev, "sync": "incremental", "target": target,
                            "format": "qcow2", "mode": "existing"}
    if bitmap:
        data["bitmap"] = bitmap
    data.update(extra)
    return Action("drive-backup", {k: v for k, v in data.items() if v is not None})


def bd(dev: str, target: str, **extra: Any) -> Action:
    return Action("blockdev-backup", {"device": dev, "target": target, "job-id": f"j-{dev}",
                                      **extra})


async def apply(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        EXE, "apply", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
