"""backup_overhead: a full backup through ``bitmap-tui apply`` vs the same job by raw QMP.

One sandbox QEMU (:class:`tui.demo.sandbox.Sandbox`) with one qcow2 drive of ``--size``, written full
with data (HMP ``qemu-io``) before anything is timed. Each round, for each side (alternating
which goes first), a fresh target is made the same way: ``qemu-img create`` of a qcow2 of the
same size, then ``blockdev-add`` on the sandbox's control monitor; the job is a
``blockdev-backup`` with ``sync: full`` from ``disk0`` to that node:
- app: the installed console script, ``bitmap-tui apply FILE.yaml --connect vm=unix:SOCK --json``
  (the transaction holds the one action; the app checks it, sends it, polls while the job runs
  and waits for its end), with a fresh, empty config and state directory;
- bare: ``benchmarks/bare_status.py backup``, a qemu.qmp script sending the same
  ``blockdev-backup`` on the same socket and waiting for ``BLOCK_JOB_COMPLETED``.

``app_s`` / ``baseline_s`` are the job's own duration as QEMU stamps it: from its
``JOB_STATUS_CHANGE`` to ``created`` to the one to ``concluded`` (QEMU's event timestamps, read
by a passive listener on a third monitor that both sides share): what the app's polling could
slow is QEMU's copy. ``app_wall_s`` / ``baseline_wall_s`` are the whole processes, start to exit. One untimed job by
the bare side comes first (the first copy after the data was written runs slower).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from benchmarks.bench_status import console_script
from benchmarks.common import ROOT, emit, median, r
from tui.demo.sandbox import Sandbox

CHUNK = 256 << 20  # one qemu-io write per chunk (each well within the control timeout)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


class JobClock:
    """Job durations from QEMU's own event timestamps, heard on a monitor of their own."""

    def __init__(self) -> None:
        self.client = QMPClient("bench-observer")
        self.created: dict[str, float] = {}
        self.concluded: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self, sock: str) -> None:
        await self.client.connect(sock)
        self._task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        async for event in self.client.events:
            if event["event"] != "JOB_STATUS_CHANGE":
                continue
            ts: Any = event["timestamp"]
            data: Any = event["data"]
            at = ts["seconds"] + ts["microseconds"] / 1e6
            status, job = data["status"], data["id"]
            if status == "created":
                self.created[job] = at
            elif status == "concluded":
                self.concluded[job] = at

    async def duration(self, job: str, timeout: float = 30) -> float:
        end = time.monotonic() + timeout
        while job not in self.concluded:
            if time.monotonic() > end:
                raise RuntimeError(f"no end of job {job} heard")
            await asyncio.sleep(0.01)
        return self.concluded[job] - self.created[job]

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.client.disconnect()


async def make_target(sb: Sandbox, n: int, size: int) -> tuple[str, Path]:
    path = sb.path(f"target{n}.qcow2")
    await asyncio.to_thread(subprocess.run, ["qemu-img", "create", "-q", "-f", "qcow2",
                                             str(path), str(size)], check=True)
    node = f"tgt{n}"
    await sb.qmp("blockdev-add", {"driver": "qcow2", "node-name": node,
                                  "file": {"driver": "file", "filename": str(path)}})
    return node, path


async def drop_target(sb: Sandbox, node: str, path: Path) -> None:
    await sb.qmp("blockdev-del", {"node-name": node})
    await asyncio.to_thread(path.unlink)


async def run_side(side: str, sb: Sandbox, job: str, node: str, env: dict[str, str],
                   tmp: Path) -> float:
    data = {"job-id": job, "device": "disk0", "target": node, "sync": "full"}
    if side == "app":
        spec = tmp / f"{job}.yaml"
        spec.write_text(json.dumps({"actions": [{"type": "blockdev-backup", "data": data}]}))
        argv = [console_script(), "apply", str(spec), "--connect", f"vm={sb.address}", "--json"]
    else:
        spec = tmp / f"{job}.json"
        spec.write_text(json.dumps(data))
        argv = [sys.executable, "-m", "benchmarks.bare_status", "backup", str(sb.socket), str(spec)]
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{side} backup failed (exit {proc.returncode}): "
                           f"{(err or out).decode().strip()[-500:]}")
    return wall


async def measure(size: int, rounds: int, tmp: Path) -> dict[str, Any]:
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp / "config"), XDG_STATE_HOME=str(tmp / "state"))
    observer = tmp / "observer.sock"
    sb = Sandbox(drives=1, size=str(size), workdir=tmp / "qemu",
                 extra_args=["-qmp", f"unix:{observer},server=on,wait=off"])
    await sb.start()
    clock = JobClock()
    try:
        for offset in range(0, size, CHUNK):
            await sb.write(0, offset, min(CHUNK, size - offset))
        await clock.start(str(observer))
        job_s: dict[str, list[float]] = {"app": [], "bare": []}
        wall_s: dict[str, list[float]] = {"app": [], "bare": []}
        # One untimed job first: the first copy after the data was written is slower (caches).
        node, path = await make_target(sb, 0, size)
        await run_side("bare", sb, "bench-warm-up", node, env, tmp)
        await clock.duration("bench-warm-up")
        await drop_target(sb, node, path)
        n = 0
        for i in range(rounds):
            for side in (("app", "bare") if i % 2 == 0 else ("bare", "app")):
                n += 1
                node, path = await make_target(sb, n, size)
                job = f"bench-{side}-{n}"
                wall_s[side].append(await run_side(side, sb, job, node, env, tmp))
                job_s[side].append(await clock.duration(job))
                await drop_target(sb, node, path)
    finally:
        await clock.stop()
        await sb.close()
    app_s, bare_s = median(job_s["app"]), median(job_s["bare"])
    app_wall, bare_wall = median(wall_s["app"]), median(wall_s["bare"])
    return {
        "size_mib": size >> 20,
        "app_s": r(app_s, 3),
        "baseline_s": r(bare_s, 3),
        "ratio": r(app_s / bare_s, 3),
        "app_wall_s": r(app_wall, 3),
        "baseline_wall_s": r(bare_wall, 3),
        "wall_ratio": r(app_wall / bare_wall, 3),
        "app_runs_s": [r(x, 3) for x in job_s["app"]],
        "baseline_runs_s": [r(x, 3) for x in job_s["bare"]],
        "mib_per_s_app": r((size >> 20) / app_s, 0),
        "rounds": rounds,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="1G", help="disk size (K, M or G), written full")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
        emit(asyncio.run(measure(parse_size(a.size), a.rounds, Path(tmp))))


if __name__ == "__main__":
    main()
