"""Deleting backup images the ledger recorded as INVALID or UNKNOWN (failed or unresolved runs).

Only such images are ever deleted: never a VALID, PENDING or INCOMPLETE one, an image that is
(directly or further down) the backing file of a kept image, or a file QEMU still has open.

Files are compared by identity, never by path string: a path is resolved (``realpath``) and
``stat``-ed, and a file is deleted only if this ledger created it and it is still that file (the
device and inode recorded at creation, and the size and mtime recorded when the ledger let go of
it). Any other file at that path (another VM's image through a symlinked directory, a file made
by hand after ours was removed) is refused, as is a file that is also a kept image of any
connection. The files are only deleted when QEMU runs on this machine (a unix socket address);
for a remote QEMU the caller prints the paths instead. Each deletion is recorded in the ledger
(``images.deleted``) so the chain view stops offering it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from tui.core.base.audit import AuditLog
from tui.core.base.errors import AuditError
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageRow, ImageState

DELETABLE = (ImageState.INVALID, ImageState.UNKNOWN)


def protected_ids(images: list[ImageRow]) -> set[int]:
    """Ids of every image a VALID image stands on (its backing files, transitively)."""
    by_id = {i.id: i for i in images}
    out: set[int] = set()
    for im in images:
        if im.state is not ImageState.VALID:
            continue
        parent = im.parent_id
        while parent is not None and parent not in out:
            out.add(parent)
            row = by_id.get(parent)
            parent = row.parent_id if row is not None else None
    return out


FileKey = tuple[int, int]  # (device, inode)


def _key(path: str) -> FileKey | None:
    try:
        st = os.stat(os.path.realpath(path))
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def identity_mismatch(im: ImageRow) -> str | None:
    """Why the file at ``im.path`` is not the file this ledger created (None: it is, or it is
    gone). A file the ledger has no identity for was never created by it."""
    if im.file_dev is None or im.file_ino is None:
        return "this ledger never created that file"
    try:
        st = os.stat(os.path.realpath(im.path))
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    if (st.st_dev, st.st_ino) != (im.file_dev, im.file_ino):
        return "another file is at that path now (not the one this ledger created)"
    if (im.file_size, im.file_mtime_ns) != (st.st_size, st.st_mtime_ns):
        return "the file changed since this ledger let go of it"
    return None


def not_ours(ledger: Ledger, path: str) -> str | None:
    """Why the file at ``path`` must not be deleted as the ledger's own (None: an image of this
    ledger is that very file, as the ledger recorded it). Paths are compared after realpath."""
    real = os.path.realpath(path)
    rows = [i for i in ledger.images() if os.path.realpath(i.path) == real]
    if not rows:
        return "not a file this ledger created"
    reasons = [identity_mismatch(i) for i in rows]
    if any(r is None for r in reasons):
        return None
    return next(r for r in reasons if r is not None)


def _kept_keys(ledger: Ledger, open_files: Iterable[str]) -> tuple[set[FileKey], set[str]]:
    """Identities and resolved paths of every file that must stay: kept images of every
    connection (not only this one) and the files QEMU has open."""
    every = ledger.images()
    keep = protected_ids(every)
    kept = [i.path for i in every if i.state not in DELETABLE or i.id in keep] + list(open_files)
    keys = {k for k in (_key(p) for p in kept) if k is not None}
    return keys, {os.path.realpath(p) for p in kept}


def deletable_images(ledger: Ledger, connection: str, drive: str | None = None,
                     open_files: Iterable[str] = ()) -> list[ImageRow]:
    """The INVALID/UNKNOWN images of ``connection`` (and ``drive``) whose files may be deleted."""
    every = ledger.images(connection=connection)
    keep = protected_ids(ledger.images())
    keys, real = _kept_keys(ledger, open_files)
    return [
        i for i in every
        if (drive is None or i.drive == drive) and i.state in DELETABLE and i.deleted is None
        and i.id not in keep and os.path.realpath(i.path) not in real
        and _key(i.path) not in keys and identity_mismatch(i) is None
    ]


@dataclass
class DeleteResult:
    deleted: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "PATH: why" (no longer deletable, OS error)

    @property
    def ok(self) -> bool:
        return not self.refused

    def lines(self) -> list[str]:
        return ([f"deleted {p}" for p in self.deleted]
                + [f"already gone {p}" for p in self.already_gone]
                + [f"not deleted {p}" for p in self.refused])


def delete_images(ledger: Ledger, connection: str, image_ids: Iterable[int],
                  open_files: Iterable[str] = (), audit: AuditLog | None = None) -> DeleteResult:
    """Delete the files of these images, re-checking each against the ledger first.

    The view that offered the deletion may be stale (a run finished since): every image is
    checked again here, so a VALID or protected image is refused, never deleted. With ``audit``
    each deletion is recorded there first (a file whose intent cannot be written stays).
    """
    allowed = {i.id: i for i in deletable_images(ledger, connection, open_files=open_files)}
    result = DeleteResult()
    done: list[int] = []
    for image_id in image_ids:
        im = allowed.get(image_id)
        if im is None:
            row = ledger.image(image_id)
            what = row.path if row is not None else f"image {image_id}"
            why = f"state {row.state}" if row is not None else "not in the ledger"
            if row is not None and row.state in DELETABLE:
                why = identity_mismatch(row) or "a kept image or an open file is that file"
            result.refused.append(f"{what}: no longer deletable ({why})")
            continue
        mismatch = identity_mismatch(im)
        if mismatch is not None:
            result.refused.append(f"{im.path}: {mismatch}")
            continue
        try:
            real = os.path.realpath(im.path)
            audit.unlink(real, connection=connection) if audit else os.unlink(real)
        except AuditError as exc:
            result.refused.append(f"{im.path}: {exc}")
            continue
        except FileNotFoundError:
            result.already_gone.append(im.path)
        except OSError as exc:
            result.refused.append(f"{im.path}: {exc.strerror or exc}")
            continue
        else:
            result.deleted.append(im.path)
        done.append(im.id)
    if done:
        ledger.mark_deleted(done)
    return result
