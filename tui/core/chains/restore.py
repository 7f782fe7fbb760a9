"""Restore one drive's point to a new standalone image, or export it read-only over NBD.

Two routes write the image:

- **local** (the chain's files are on this machine): ``qemu-img convert`` of the point's chain;
- **qemu** (through QEMU): the chain is opened read-only with ``blockdev-add`` (node by node, so
  the chain is the ledger's and not whatever the files' headers name), the new image is made with
  ``blockdev-create`` and a ``blockdev-backup sync=full`` job copies the point into it.

Either way the copy is written to a partial file next to the target and checked with
``qemu-img compare`` against the chain; only then is it linked to the target name (which must not
exist: a hard link never overwrites). The restore is recorded in the ledger before the partial
file exists, so a killed restore leaves a record, and the next restore removes its partial file
(and, for the qemu route, its nodes and job in QEMU).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from tui.core.base.audit import AuditLog
from tui.core.base.errors import BitmapTuiError, LocalFileError, QMPCommandError, RefusedError
from tui.core.base.programs import QEMU_IMG
from tui.core.chains.lock import run_lock, run_lock_async
from tui.core.chains.points import Point
from tui.core.ledger.points_repository import PointsLedger
from tui.core.ledger.rows import RestoreRow, RestoreState
from tui.core.txn.targets import QMPConn, TargetError, _create_job, create_target

FORMATS = ("qcow2", "raw")
ROUTES = ("local", "qemu")
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")

Progress = Callable[[int, int], None]


class RestoreRefused(RefusedError):
    """Nothing was written: no such point, not VALID, the file exists, read-only."""


class RestoreFailed(LocalFileError):
    """The copy or the check failed; the partial file was removed."""


@dataclass
class RestoreResult:
    drive: str
    point: int
    image: str
    format: str
    chain: list[str]
    route: str
    checked: bool | None = None  # None: not checked (the files are on another machine)
    detail: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``restore --json``."""
        return {"drive": self.drive, "point": self.point, "image": self.image,
                "format": self.format, "chain": self.chain, "route": self.route,
                "checked": self.checked, "detail": self.detail}


# ---------------------------------------------------------------------------------- checks


def check_restorable(point: Point, target: str, fmt: str) -> None:
    """Refuse (before anything is written) what cannot be restored."""
    if fmt not in FORMATS:
        raise RestoreRefused(f"format must be qcow2 or raw, not {fmt}")
    if not point.restorable:
        why = {"busy": "a prune step on this drive is unfinished (run prune to finish it)",
               "pruned": "it was pruned"}.get(point.verdict, f"its image is {point.verdict.upper()}")
        raise RestoreRefused(f"{point.drive} point {point.point} cannot be restored: {why}")
    if os.path.lexists(target):
        raise RestoreRefused(f"{target} exists and is never overwritten; choose another file")
    parent = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(parent):
        raise RestoreRefused(f"{parent} is not a directory")


def chain_is_local(point: Point) -> bool:
    """Are all the point's files readable on this machine?"""
    return all(os.path.isfile(p) and os.access(p, os.R_OK) for p in point.chain)


def backing_chain(top: str) -> list[str]:
    """The files ``top``'s headers name, oldest first (``qemu-img info --backing-chain``)."""
    res = _run([QEMU_IMG, "info", "--backing-chain", "--output=json", "-f", "qcow2", top])
    if res.returncode != 0:
        raise RestoreFailed(f"qemu-img info {top}: {_last_line(res)}")
    return [os.path.realpath(e["filename"]) for e in reversed(json.loads(res.stdout))]


def check_chain_files(point: Point) -> None:
    """The files on disk form exactly the ledger's chain (no foreign or missing backing file)."""
    found = backing_chain(point.image)
    wanted = [os.path.realpath(p) for p in point.chain]
    if found != wanted:
        raise RestoreFailed(
            f"the files of point {point.point} do not form the ledger's chain "
            f"(on disk: {' ← '.join(reversed(found))}; ledger: {' ← '.join(reversed(wanted))})")


def compare_with_chain(point: Point, image: str, fmt: str) -> tuple[bool, str]:
    """``qemu-img compare`` of the restored image with the point's chain."""
    res = _run([QEMU_IMG, "compare", "-f", "qcow2", "-F", fmt, point.image, image])
    return res.returncode == 0, _last_line(res)


def has_backing_file(image: str, fmt: str) -> bool:
    res = _run([QEMU_IMG, "info", "--output=json", "-f", fmt, image])
    return res.returncode != 0 or "backing-filename" in json.loads(res.stdout or "{}")


def _run(argv: list[str], timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _last_line(res: subprocess.CompletedProcess[str]) -> str:
    lines = (res.stdout or res.stderr or "").strip().splitlines()
    return lines[-1] if lines else f"exit {res.returncode}"


# ---------------------------------------------------------------------------------- partial files


def partial_path(target: str, restore_id: int) -> str:
    """The partial file next to ``target`` (same directory, so linking it is one step)."""
    head, tail = os.path.split(os.path.abspath(target))
    return os.path.join(head, f".{tail}.restore-{restore_id}.partial")


def reserve(path: str) -> None:
    """Create ``path`` (it must not exist): the name is ours from here on."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def publish(partial: str, target: str) -> None:
    """Give the checked copy its name (never over an existing file), then drop the partial name."""
    try:
        os.link(partial, target)
    except FileExistsError:
        raise RestoreFailed(f"{target} appeared while restoring; it was left as it is") from None
    os.unlink(partial)
    fd = os.open(os.path.dirname(os.path.abspath(target)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_partial(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def repair_local(ledger: PointsLedger) -> list[str]:
    """Remove the partial files of restores whose process is gone; returns their paths."""
    done = []
    for row in ledger.abandoned_restores():
        if row.route == "qemu":
            continue  # needs its QEMU (repair_qemu)
        remove_partial(row.partial)
        ledger.end_restore(row.id, RestoreState.FAILED, "interrupted; partial file removed")
        done.append(row.partial)
    return done


# ---------------------------------------------------------------------------------- local route


def convert(point: Point, partial: str, fmt: str, on_progress: Progress | None = None,
            speed: int = 0) -> None:
    """``qemu-img convert`` of the point's chain into ``partial`` (standalone: no backing);
    ``speed`` limits it to that many bytes per second (0: unlimited)."""
    argv = [QEMU_IMG, "convert", "-p", "-f", "qcow2", "-O", fmt]
    if speed:
        argv += ["-r", str(speed)]
    argv += [point.image, partial]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    buf = b""
    while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]
        buf = (buf + chunk)[-256:]
        found = _PROGRESS.findall(buf)
        if found and on_progress is not None:
            on_progress(int(float(found[-1]) * 100), 10000)
    err = proc.stderr.read().decode(errors="replace").strip()
    if proc.wait() != 0:
        raise RestoreFailed(f"qemu-img convert: {err.splitlines()[-1] if err else proc.returncode}")


def _record_failure(ledger: PointsLedger, rid: int, partial: str,
                    exc: BaseException) -> BaseException:
    """Record restore ``rid`` as failed; return what to raise: a QMP or OS error as one line
    (RestoreFailed), anything else as it is."""
    ledger.end_restore(rid, RestoreState.FAILED, str(exc) or type(exc).__name__)
    if isinstance(exc, QMPCommandError):
        return RestoreFailed(exc.desc)
    if isinstance(exc, OSError):
        return RestoreFailed(f"{partial}: {exc.strerror or exc}")
    return exc


def _fail(ledger: PointsLedger, rid: int, partial: str, exc: BaseException) -> NoReturn:
    """Record restore ``rid`` as failed and raise what :func:`_record_failure` says."""
    failure = _record_failure(ledger, rid, partial, exc)
    if failure is exc:
        raise exc
    raise failure from None


def _restored(ledger: PointsLedger, rid: int, point: Point, target: str, fmt: str, route: str,
              checked: bool | None, detail: str) -> RestoreResult:
    """Record restore ``rid`` as done; its result."""
    ledger.end_restore(rid, RestoreState.DONE)
    return RestoreResult(point.drive, point.point, target, fmt, list(point.chain), route,
                         checked, detail)


def restore_local(ledger: PointsLedger, point: Point, target: str, fmt: str, *,
                  on_progress: Progress | None = None, speed: int = 0,
                  audit: AuditLog | None = None, wait: float = 0.0,
                  on_note: Callable[[str], None] | None = None) -> RestoreResult:
    """Write ``point`` to ``target`` with qemu-img, check it, and only then give it its name
    (audited write-ahead: the intent is recorded before any file is written). Holds the
    connection's run lock, so no prune removes the chain under it (waits up to ``wait`` s)."""
    with run_lock(ledger, point.connection, "restored from", f"a restore of {point.drive}",
                  wait=wait, on_note=on_note):
        return _restore_local(ledger, point, target, fmt, on_progress, speed, audit)


def _restore_local(ledger: PointsLedger, point: Point, target: str, fmt: str,
                   on_progress: Progress | None, speed: int, audit: AuditLog | None) -> RestoreResult:
    """:func:`restore_local` once it holds the run lock."""
    repair_local(ledger)
    check_restorable(point, target, fmt)
    check_chain_files(point)
    rid = ledger.new_restore(connection=point.connection, drive=point.drive,
                             image_id=point.image_id, target=target,
                             partial=partial_path(target, 0), fmt=fmt, route="local")
    partial = _set_partial(ledger, rid, target)
    change = (audit.change("local", "qemu-img convert",
                           {"chain": list(point.chain), "target": target, "format": fmt})
              if audit is not None else contextlib.nullcontext())
    try:
        with change:
            reserve(partial)
            convert(point, partial, fmt, on_progress, speed)
            same, detail = compare_with_chain(point, partial, fmt)
            if not same:
                raise RestoreFailed(f"the copy differs from the chain: {detail}")
            if has_backing_file(partial, fmt):
                raise RestoreFailed("the copy names a backing file")
            publish(partial, target)
    except BaseException as exc:
        remove_partial(partial)
        _fail(ledger, rid, partial, exc)
    return _restored(ledger, rid, point, target, fmt, "local", True, detail)


def _set_partial(ledger: PointsLedger, restore_id: int, target: str) -> str:
    """The partial name carries the restore's id (unique); recorded before the file exists."""
    partial = partial_path(target, restore_id)
    ledger.set_restore_partial(restore_id, partial)
    return partial


# ---------------------------------------------------------------------------------- qemu route


def node_prefix(restore_id: int) -> str:
    """Every node and job of one restore starts with this (so a repair finds them)."""
    return f"rs{restore_id}"


async def open_chain(conn: QMPConn, point: Point, prefix: str) -> str:
    """``blockdev-add`` the point's files read-only, each on the previous one; the top node."""
    below: str | None = None
    for i, path in enumerate(point.chain):
        node = f"{prefix}c{i}"
        try:
            await conn.execute("blockdev-add", {
                "driver": "qcow2", "node-name": node, "read-only": True,
                "file": {"driver": "file", "filename": path, "read-only": True},
                "backing": below,
            })
        except QMPCommandError as exc:
            raise RestoreFailed(f"opening {path} in QEMU: {exc.desc}") from None
        below = node
    assert below is not None
    return below


async def close_nodes(conn: QMPConn, prefix: str) -> None:
    """Detach every node of one restore (newest first) and forget its jobs; gone ones are fine."""
    with contextlib.suppress(BitmapTuiError):
        for job in await conn.execute("query-jobs"):
            if str(job.get("id", "")).startswith(prefix):
                if job.get("status") not in ("concluded", "null"):
                    with contextlib.suppress(QMPCommandError):
                        await conn.execute("job-cancel", {"id": job["id"]})
                    await _wait_job(conn, job["id"], 30)
                with contextlib.suppress(QMPCommandError):
                    await conn.execute("job-dismiss", {"id": job["id"]})
    nodes = await conn.execute("query-named-block-nodes", {"flat": True})
    mine = sorted({n["node-name"] for n in nodes if str(n.get("node-name", "")).startswith(prefix)},
                  key=_node_order)
    for name in mine:
        with contextlib.suppress(QMPCommandError):
            await conn.execute("blockdev-del", {"node-name": name})


def _node_order(name: str) -> tuple[int, int]:
    """Targets first (t, tf), then the chain from its top (c3, c2, ...)."""
    if name.endswith("t"):
        return (0, 0)
    if name.endswith("t-f"):
        return (1, 0)
    m = re.search(r"c(\d+)$", name)
    return (2, -int(m.group(1)) if m else 0)


async def _wait_job(conn: QMPConn, job_id: str, timeout: float,
                    on_progress: Progress | None = None) -> str | None:
    """Wait for a job to conclude; its error (None when it completed)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        jobs = {j["id"]: j for j in await conn.execute("query-jobs")}
        job = jobs.get(job_id)
        if job is None:
            return "the job vanished from QEMU"
        if on_progress is not None and job.get("total-progress"):
            on_progress(int(job["current-progress"]), int(job["total-progress"]))
        if job["status"] in ("concluded", "null"):
            return job.get("error")
        if loop.time() > end:
            raise RestoreFailed(f"{job_id} did not finish within {timeout:g} s")
        await asyncio.sleep(0.1)


async def make_target(conn: QMPConn, path: str, size: int, fmt: str, node: str) -> None:
    """The new image, made by QEMU and attached as ``node`` (file node ``node-f``)."""
    if fmt == "qcow2":
        await create_target(conn, path, size, node=node, local=False)
        return
    await _create_job(conn, f"{node}-cf", {"driver": "file", "filename": path, "size": size}, 60)
    await conn.execute("blockdev-add", {"driver": "file", "filename": path, "node-name": f"{node}-f"})
    await conn.execute("blockdev-add", {"driver": "raw", "node-name": node, "file": f"{node}-f"})


async def restore_qemu(conn: QMPConn, ledger: PointsLedger, point: Point, target: str, fmt: str,
                       *, local_files: bool, on_progress: Progress | None = None,
                       speed: int = 0, timeout: float = 3600, wait: float = 0.0,
                       on_note: Callable[[str], None] | None = None) -> RestoreResult:
    """Write ``point`` to ``target`` through QEMU (a block job copies it), check, name it.

    ``local_files``: QEMU runs on this machine, so the partial file can be checked with qemu-img,
    renamed, and removed on failure. Otherwise QEMU writes ``target`` directly and the result
    says it was not checked. Holds the connection's run lock (waits up to ``wait`` s for it)."""
    async with run_lock_async(ledger, point.connection, "restored from",
                              f"a restore of {point.drive}", wait=wait, on_note=on_note):
        return await _restore_qemu(conn, ledger, point, target, fmt, local_files, on_progress,
                                   speed, timeout)


async def _restore_qemu(conn: QMPConn, ledger: PointsLedger, point: Point, target: str, fmt: str,
                        local_files: bool, on_progress: Progress | None, speed: int,
                        timeout: float) -> RestoreResult:
    """:func:`restore_qemu` once it holds the run lock."""
    await repair_qemu(conn, ledger)
    if local_files:
        check_restorable(point, target, fmt)
    elif not point.restorable:
        check_restorable(point, "", fmt)
    size = point_size(ledger, point)
    rid = ledger.new_restore(connection=point.connection, drive=point.drive,
                             image_id=point.image_id, target=target,
                             partial=target, fmt=fmt, route="qemu")
    partial = _set_partial(ledger, rid, target) if local_files else target
    prefix = node_prefix(rid)
    try:
        if local_files:
            reserve(partial)
        top = await open_chain(conn, point, prefix)
        try:
            await make_target(conn, partial, size, fmt, f"{prefix}t")
        except TargetError as exc:
            raise RestoreFailed(str(exc)) from None
        job = f"{prefix}j"
        await conn.execute("blockdev-backup", {
            "job-id": job, "device": top, "target": f"{prefix}t", "sync": "full",
            "auto-dismiss": False, **({"speed": speed} if speed else {}),
        })
        err = await _wait_job(conn, job, timeout, on_progress)
        with contextlib.suppress(QMPCommandError):
            await conn.execute("job-dismiss", {"id": job})
        if err:
            raise RestoreFailed(f"the copy job failed: {err}")
        await close_nodes(conn, prefix)
        checked: bool | None = None
        detail = "not checked: the files are on the QEMU host"
        if local_files:
            checked, detail = compare_with_chain(point, partial, fmt)
            if not checked:
                raise RestoreFailed(f"the copy differs from the chain: {detail}")
            publish(partial, target)
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            await asyncio.shield(close_nodes(conn, prefix))
        if local_files:
            remove_partial(partial)
        _fail(ledger, rid, partial, exc)
    return _restored(ledger, rid, point, target, fmt, "qemu", checked, detail)


def point_size(ledger: PointsLedger, point: Point) -> int:
    """The drive's virtual size at that point (the ledger's record of the source)."""
    im = ledger.image(point.image_id)
    if im is not None and im.source_size:
        return im.source_size
    if chain_is_local(point):
        res = _run([QEMU_IMG, "info", "--output=json", "-f", "qcow2", point.image])
        if res.returncode == 0:
            return int(json.loads(res.stdout)["virtual-size"])
    raise RestoreRefused(f"the size of {point.drive} at point {point.point} is unknown")


async def repair_qemu(conn: QMPConn, ledger: PointsLedger) -> list[RestoreRow]:
    """Finish what killed restores and exports on this connection left in QEMU and on disk."""
    done = []
    for row in ledger.abandoned_restores():
        if row.connection != conn.name or row.route not in ("qemu", "export"):
            continue
        if row.route == "export":
            await stop_export(conn, row.id, server=bool(row.partial))
            await close_nodes(conn, node_prefix(row.id))
            remove_partial(row.target)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(row.target))
        else:
            await close_nodes(conn, node_prefix(row.id))
            if row.partial != row.target:
                remove_partial(row.partial)
        ledger.end_restore(row.id, RestoreState.FAILED, "interrupted; cleaned up")
        done.append(row)
    return done


# ---------------------------------------------------------------------------------- NBD export


@dataclass
class Export:
    """A point exported read-only over NBD from QEMU."""

    restore_id: int
    uri: str
    socket: str
    name: str
    prefix: str


async def start_export(conn: QMPConn, ledger: PointsLedger, point: Point) -> Export:
    """Open the point read-only in QEMU and export it over NBD on a private unix socket.

    QEMU must run on this machine (the socket is made in a new 0700 directory here)."""
    await repair_qemu(conn, ledger)
    check_restorable(point, os.path.join(tempfile.gettempdir(), ".no-such-target"), "qcow2")
    sock_dir = tempfile.mkdtemp(prefix="bitmap-tui-nbd-")
    sock = os.path.join(sock_dir, "nbd.sock")
    rid = ledger.new_restore(connection=point.connection, drive=point.drive,
                             image_id=point.image_id, target=sock, partial="", fmt="nbd",
                             route="export")
    prefix = node_prefix(rid)
    name = f"{point.drive}-point-{point.point}"
    started = False
    try:
        top = await open_chain(conn, point, prefix)
        try:
            await conn.execute("nbd-server-start", {"addr": {"type": "unix", "data": {"path": sock}}})
        except QMPCommandError as exc:
            raise RestoreRefused(f"cannot start QEMU's NBD server: {exc.desc}") from None
        # From here on the server is ours to stop (also for a repair after a kill).
        ledger.set_restore_partial(rid, sock)
        started = True
        await conn.execute("block-export-add", {"type": "nbd", "id": f"{prefix}e", "node-name": top,
                                                "name": name, "writable": False})
    except BaseException:
        with contextlib.suppress(BaseException):
            await asyncio.shield(_end_export(conn, ledger, rid, prefix, sock, started))
        raise
    return Export(rid, f"nbd+unix:///{name}?socket={sock}", sock, name, prefix)


async def stop_export(conn: QMPConn, restore_id: int, *, server: bool = True) -> None:
    """Remove the export and (``server``) stop the NBD server this restore started."""
    export_id = f"{node_prefix(restore_id)}e"
    with contextlib.suppress(QMPCommandError):
        await conn.execute("block-export-del", {"id": export_id, "mode": "hard"})
    for _ in range(100):
        exports = await conn.execute("query-block-exports")
        if not any(e.get("id") == export_id for e in exports):
            break
        await asyncio.sleep(0.05)
    if server:
        with contextlib.suppress(QMPCommandError):
            await conn.execute("nbd-server-stop")


async def _end_export(conn: QMPConn, ledger: PointsLedger, rid: int, prefix: str, sock: str,
                      server: bool) -> None:
    await stop_export(conn, rid, server=server)
    await close_nodes(conn, prefix)
    remove_partial(sock)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(sock))
    ledger.end_restore(rid, RestoreState.DONE)


async def end_export(conn: QMPConn, ledger: PointsLedger, export: Export) -> None:
    """Remove the export, the nodes and the socket directory."""
    await _end_export(conn, ledger, export.restore_id, export.prefix, export.socket, True)
