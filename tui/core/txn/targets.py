"""Backup target images, created by QEMU itself over QMP (docs/qmp-facts.md, "Creating backup targets through QEMU").

``blockdev-create`` works when QEMU runs on another machine: the file is made where QEMU can open
it. ``qemu-img`` is only a fallback for a local QEMU without ``blockdev-create`` (< 2.12), run with
an argument list (never a shell).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from dataclasses import dataclass
from functools import partial
from typing import Any

from tui.core.base.errors import LocalFileError, QMPCommandError
from tui.core.base.programs import QEMU_IMG
from tui.core.model import reducer
from tui.core.model.parse import parse_jobs
from tui.core.qmp.link import Link


class TargetError(LocalFileError):
    """A target image could not be created or attached."""


# What this module needs from a connection: the one Connection protocol.
QMPConn = Link


@dataclass(frozen=True, slots=True)
class Target:
    """A target image attached to QEMU: its format node (the backup's ``target``) and file node."""

    path: str
    node: str
    file_node: str


async def _wait_create_job(conn: QMPConn, job_id: str, timeout: float) -> None:
    """Wait for a blockdev-create job to conclude, dismiss it, raise on its error."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        jobs = parse_jobs(await conn.execute("query-jobs"), None)
        job = jobs.get(job_id)
        if job is None:
            raise TargetError(f"{job_id}: the create job vanished from QEMU")
        if job.status == "concluded":
            with contextlib.suppress(QMPCommandError):
                await conn.execute("job-dismiss", {"id": job_id})
                _forget_job(conn, job_id)
            if job.error:
                raise TargetError(f"creating the target failed: {job.error}")
            return
        if loop.time() > end:
            raise TargetError(f"{job_id}: target creation did not finish within {timeout:g} s")
        await asyncio.sleep(0.05)


def _forget_job(conn: QMPConn, job_id: str) -> None:
    """A create job this module dismissed is nothing the operator must see or dismiss."""
    store = getattr(conn, "store", None)
    if store is not None:
        store.update(conn.name, partial(reducer.dismiss_job, job_id=job_id))


async def _create_job(conn: QMPConn, job_id: str, options: dict[str, Any], timeout: float) -> None:
    # QEMU 7.2 aborts if node queries run while it formats a qcow2 image: hold ours back.
    quiet = getattr(conn, "quiet_nodes", None)
    with quiet() if quiet is not None else contextlib.nullcontext():
        try:
            await conn.execute("blockdev-create", {"job-id": job_id, "options": options})
        except QMPCommandError as exc:
            raise TargetError(f"blockdev-create ({options.get('driver')}): {exc.desc}") from None
        await _wait_create_job(conn, job_id, timeout)


def create_local(path: str, size: int, backing: str | None = None) -> None:
    """``qemu-img create`` on this machine (fallback when QEMU has no blockdev-create)."""
    argv = [QEMU_IMG, "create", "-q", "-f", "qcow2"]
    if backing:
        argv += ["-b", backing, "-F", "qcow2"]
    argv += [path, str(size)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines()
        raise TargetError(f"qemu-img create failed: {lines[-1] if lines else res.returncode}")


async def create_target(
    conn: QMPConn,
    path: str,
    size: int,
    *,
    node: str,
    backing: str | None = None,
    local: bool | None = None,
    timeout: float = 60.0,
) -> Target:
    """Create a qcow2 image at ``path`` (on the QEMU host) and attach it as node ``node``.

    ``backing`` is the previous image of the chain (None for a full backup); it is recorded in
    the new image but not opened (the backup writes only the target). ``local`` forces (True) or
    forbids (False) the qemu-img fallback; None picks it only when QEMU lacks blockdev-create.
    """
    file_node = f"{node}-f"
    use_local = local if local is not None else "blockdev-create" not in conn.model.commands
    if use_local:
        await asyncio.to_thread(create_local, path, size, backing)
    else:
        await _create_job(conn, f"{node}-cf", {"driver": "file", "filename": path, "size": 0}, timeout)
    try:
        await conn.execute("blockdev-add", {"driver": "file", "filename": path, "node-name": file_node})
    except QMPCommandError as exc:
        raise TargetError(f"attaching {path}: {exc.desc}") from None
    try:
        if not use_local:
            opts: dict[str, Any] = {"driver": "qcow2", "file": file_node, "size": size}
            if backing:
                opts.update({"backing-file": backing, "backing-fmt": "qcow2"})
            await _create_job(conn, f"{node}-cq", opts, timeout)
        await conn.execute(
            "blockdev-add", {"driver": "qcow2", "node-name": node, "file": file_node, "backing": None}
        )
    except (QMPCommandError, TargetError) as exc:
        with contextlib.suppress(Exception):
            await conn.execute("blockdev-del", {"node-name": file_node})
        if isinstance(exc, TargetError):
            raise
        raise TargetError(f"attaching {path}: {exc.desc}") from None
    return Target(path=path, node=node, file_node=file_node)


async def image_size(conn: QMPConn, node: str) -> int | None:
    """Allocated bytes of an attached image (``actual-size``), None when QEMU cannot tell."""
    with contextlib.suppress(Exception):
        for entry in await conn.execute("query-named-block-nodes", {"flat": True}):
            if entry.get("node-name") == node:
                size = (entry.get("image") or {}).get("actual-size")
                return size if isinstance(size, int) else None
    return None


async def release_target(conn: QMPConn, node: str | None, file_node: str | None) -> bool:
    """Detach a target (format node, then file node), by the names we gave them.

    True when we detached every node ourselves: ``blockdev-del`` flushes and closes the image, so
    its data and metadata are on disk. False when a node was already gone (QEMU restarted, or
    someone else removed it): then nothing says the image was ever flushed. Raises
    :class:`TargetError` when QEMU refuses (e.g. the node is still in use).
    """
    ours = True
    for name in (node, file_node):
        if not name:
            continue
        try:
            await conn.execute("blockdev-del", {"node-name": name})
        except QMPCommandError as exc:
            text = exc.desc.lower()
            if not any(k in text for k in ("not found", "cannot find", "failed to find")):
                raise TargetError(f"detaching {name}: {exc.desc}") from None
            ours = False
    return ours


def is_local(conn: QMPConn) -> bool:
    """Does QEMU run on this machine (a unix socket), so that its image files are ours to read?"""
    return getattr(getattr(conn, "address", None), "kind", "") == "unix"


def file_identity(path: str) -> os.stat_result | None:
    """``stat`` of the file a path resolves to (symlinks followed), or None when there is none."""
    try:
        return os.stat(os.path.realpath(path))
    except OSError:
        return None
