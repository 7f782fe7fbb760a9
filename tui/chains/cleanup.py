"""Deleting backup images the ledger recorded as INVALID or UNKNOWN (failed or unresolved runs).

Only such images are ever deleted: never a VALID one, a PENDING one, an image that is (directly
or further down) the backing file of a VALID image, a path a VALID image also uses, or a file
QEMU still has open. The files are only deleted when QEMU runs on this machine (a unix socket
address); for a remote QEMU the caller prints the paths instead. Each deletion is recorded in
the ledger (``images.deleted``) so the chain view stops offering it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from tui.audit import AuditLog
from tui.chains.ledger import ImageRow, ImageState, Ledger
from tui.errors import AuditError

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


def deletable_images(ledger: Ledger, connection: str, drive: str | None = None,
                     open_files: Iterable[str] = ()) -> list[ImageRow]:
    """The INVALID/UNKNOWN images of ``connection`` (and ``drive``) whose files may be deleted."""
    every = ledger.images(connection=connection)
    keep = protected_ids(every)
    keep_paths = {i.path for i in every if i.state not in DELETABLE} | set(open_files)
    return [
        i for i in every
        if (drive is None or i.drive == drive) and i.state in DELETABLE and i.deleted is None
        and i.id not in keep and i.path not in keep_paths
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
            result.refused.append(f"{what}: no longer deletable ({why})")
            continue
        try:
            audit.unlink(im.path, connection=connection) if audit else os.unlink(im.path)
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
