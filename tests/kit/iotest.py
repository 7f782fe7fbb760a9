"""What the replays of QEMU's iotests 124 and 257 share: a QEMU whose drive can fail its second
read after a flush (257's blkdebug recipe), the write pattern groups, reference copies made by
QEMU itself, backups sent through the product (prepare → TransactionRun → Verdict), and chains
checked with ``qemu-img compare``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.kit.common import wait_for
from tui.core.qmp.address import parse_address
from tui.core.qmp.fleet import Endpoint, Fleet
from tui.core.txn import Action, Transaction, TransactionRun, Verdict, prepare
from tui.demo.sandbox import QEMU_IMG, Sandbox, SandboxError, run

SIZE = 64 * 2**20
GRANULARITY = 64 * 2**10
G = GRANULARITY


@dataclass(frozen=True)
class Pattern:
    byte: int
    offset: int
    size: int = GRANULARITY


# iotest 257's four groups of guest writes (cluster numbers at 64 KiB in the comments).
GROUPS = (
    (Pattern(0x49, 0x0000000), Pattern(0x6C, 0x0100000), Pattern(0x6F, 0x2000000),
     Pattern(0x76, 0x3FF0000)),                                   # 0, 16, 512, 1023
    (Pattern(0x65, 0x0000000), Pattern(0x77, 0x00F8000), Pattern(0x72, 0x2008000),
     Pattern(0x69, 0x3FE0000)),                                   # 0, 15-16, 512-513, 1022
    (Pattern(0x74, 0x0010000), Pattern(0x69, 0x00E8000), Pattern(0x6E, 0x2018000),
     Pattern(0x67, 0x3FE0000, 2 * GRANULARITY)),                  # 1, 14-15, 513-514, 1022-1023
    (Pattern(0xAA, 0x0010000, 3 * GRANULARITY), Pattern(0xBB, 0x00D8000),
     Pattern(0xCC, 0x2028000), Pattern(0xDD, 0x3FC0000)),         # 1-3, 13-14, 514-515, 1020
)


@dataclass
class IotestSandbox(Sandbox):
    """Drive ``i`` in ``second_read_fails`` gets 257's blkdebug: after a flush, the first read
    passes and the second fails once with EIO (one cluster is copied before the error)."""

    second_read_fails: frozenset[int] = frozenset()

    def _drive_arg(self, i: int) -> str:
        if i not in self.second_read_fails:
            return super()._drive_arg(i)
        return (
            f"if=none,id=drive{i},node-name=disk{i},driver=qcow2,file.driver=blkdebug,"
            f"file.image.driver=file,file.image.filename={self.image(i)},"
            "file.set-state.0.event=flush_to_disk,file.set-state.0.state=1,"
            "file.set-state.0.new_state=2,"
            "file.set-state.1.event=read_aio,file.set-state.1.state=2,"
            "file.set-state.1.new_state=3,"
            "file.inject-error.0.event=read_aio,file.inject-error.0.errno=5,"
            "file.inject-error.0.state=3,file.inject-error.0.once=on,"
            "file.inject-error.0.immediately=off"
        )


@asynccontextmanager
async def qemu_and_product(workdir: Path, **kw: Any) -> AsyncIterator[tuple[IotestSandbox, Any]]:
    """A started sandbox and the product's connection to it (a Fleet, as the CLI uses)."""
    sb = IotestSandbox(workdir=workdir, **kw)
    await sb.start()
    fleet = Fleet(backoff_max=0.5, job_poll_interval=0.1)
    fleet.add(Endpoint("vm0", parse_address(sb.address)))
    fleet.start()
    try:
        await fleet.wait_first_answer(10)
        yield sb, fleet["vm0"]
    finally:
        await fleet.stop()
        await sb.close()


async def write_group(sb: Sandbox, n: int, drive: int = 0) -> None:
    for p in GROUPS[n]:
        await sb.hmp(f'qemu-io drive{drive} "write -P{p.byte:#x} {p.offset:#x} {p.size:#x}"')


def create_image(path: Path, backing: Path | None = None) -> Path:
    args = [QEMU_IMG, "create", "-q", "-f", "qcow2"]
    if backing is not None:
        args += ["-F", "qcow2", "-b", str(backing)]
    run(args + [str(path), str(SIZE)])
    return path


async def open_target(sb: Sandbox, conn: Any, node: str, path: Path) -> None:
    """blockdev-add an image as a backup target (its backing is not opened: it is only written)."""
    await sb.qmp("blockdev-add", {"driver": "qcow2", "node-name": node, "backing": None,
                                  "file": {"driver": "file", "filename": str(path)}})
    await conn.refresh_nodes()


async def close_target(sb: Sandbox, node: str) -> None:
    await sb.qmp("blockdev-del", {"node-name": node})


async def job_gone(sb: Sandbox, job_id: str, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while any(j["id"] == job_id for j in await sb.qmp("query-jobs")):
        if loop.time() > end:
            raise AssertionError(f"job {job_id} did not end")
        await asyncio.sleep(0.02)


async def reference_copy(sb: Sandbox, conn: Any, name: str, drive: int = 0) -> Path:
    """A full copy of the drive as it is now, made by QEMU itself (not through the product)."""
    path = create_image(sb.path(f"{name}.qcow2"))
    await open_target(sb, conn, name, path)
    await sb.qmp("blockdev-backup", {"device": f"disk{drive}", "target": name, "sync": "full",
                                     "job-id": f"job-{name}"})
    await job_gone(sb, f"job-{name}")
    await close_target(sb, name)
    await wait_for(lambda: not conn.model.active_jobs, what="no job left in the product's view")
    return path


def backup_action(job_id: str, target: str, sync: str, bitmap: str | None = "bitmap0",
                  mode: str | None = None, drive: int = 0, **extra: Any) -> Action:
    data: dict[str, Any] = {"device": f"drive{drive}", "job-id": job_id, "sync": sync,
                            "target": target, **extra}
    if bitmap:
        data["bitmap"] = bitmap
    if mode:
        data["bitmap-mode"] = mode
    return Action("blockdev-backup", data)


async def send(conn: Any, txn: Transaction) -> TransactionRun:
    """Check and send through the product; the run (its jobs are followed by ``run.wait``)."""
    await conn.refresh_nodes()
    prepared = prepare(txn, conn.model)
    assert prepared.ok, prepared.errors
    run_ = TransactionRun(conn, prepared)
    assert (await run_.send()).sent, run_.error
    return run_


async def backup(conn: Any, txn: Transaction) -> Verdict:
    return await (await send(conn, txn)).wait(60)


def rebase(image: Path, base: Path) -> None:
    run([QEMU_IMG, "rebase", "-u", "-F", "qcow2", "-b", str(base), str(image)])


def identical(image: Path, reference: Path) -> bool:
    """``qemu-img compare`` of the chain under ``image`` with ``reference`` (-U: may be in use)."""
    try:
        out = run([QEMU_IMG, "compare", "-U", str(image), str(reference)])
    except SandboxError as exc:  # exit 1: they differ
        if "differ" in str(exc).lower() or "mismatch" in str(exc).lower():
            return False
        raise
    return "identical" in out.lower()


def bitmap_count(conn: Any, name: str = "bitmap0", node: str = "disk0") -> int:
    bm = conn.model.nodes[node].bitmap(name)
    assert bm is not None, f"no bitmap {name} on {node}"
    return int(bm.count)


def anonymous_count(conn: Any, node: str = "disk0") -> int | None:
    counts = [b.count for b in conn.model.nodes[node].bitmaps if b.anonymous and b.recording]
    return counts[0] if len(counts) == 1 else None
