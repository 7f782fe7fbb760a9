"""A drive's current chain and its next base, from the ledger alone (no QEMU state): the one
place that decides which image an incremental builds on."""

from __future__ import annotations

from dataclasses import dataclass

from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import BASE_STATES, ImageRow, ImageState


@dataclass(frozen=True, slots=True)
class ChainState:
    """What the ledger says about one drive's current chain."""

    images: tuple[ImageRow, ...]  # the current chain, oldest first (all states)
    base: ImageRow | None  # the image the next incremental builds on; None → full needed
    reason: str  # why there is (or is not) a base
    busy: ImageRow | None = None  # an image whose job has not been resolved yet

    @property
    def restore_point(self) -> ImageRow | None:
        """The newest VALID image of the chain: with its backing chain, the disk at its point."""
        valid = [i for i in self.images if i.state is ImageState.VALID]
        return valid[-1] if valid else None


def chain_state(
    ledger: Ledger, connection: str, drive: str, node: str | None = None, bitmap: str | None = None
) -> ChainState:
    """The current chain of ``drive`` and its next base, from the ledger alone.

    With ``node`` and ``bitmap``, a reset of that bitmap recorded under another drive name (a
    policy naming the same disk by its device and another by its node) also ends the chain.
    """
    imgs = ledger.images(connection=connection, drive=drive)
    pending = next((i for i in imgs if i.state is ImageState.PENDING), None)
    anchors = [i for i in imgs if i.kind == "full" and i.resets_bitmap]
    if not anchors:
        return ChainState((), None, "no chain yet", pending)
    anchor = anchors[-1]
    if node is not None and bitmap is not None:
        other = [
            i for i in ledger.images(connection=connection)
            if i.drive != drive and i.node == node and i.bitmap == bitmap and i.kind == "full"
            and i.resets_bitmap and i.id > anchor.id
        ]
        if other:
            chain = tuple(i for i in imgs if i.chain_id == anchor.id)
            return ChainState(
                chain, None, f"bitmap '{bitmap}' was reset by a backup of {other[-1].drive}", pending
            )
    chain = tuple(i for i in imgs if i.chain_id == anchor.id)
    if anchor.state not in BASE_STATES:
        return ChainState(chain, None, f"its last full backup {anchor.path} is {anchor.state}", pending)
    unknown = next((i for i in chain if i.state is ImageState.UNKNOWN), None)
    if unknown is not None:
        return ChainState(
            chain, None,
            f"the outcome of {unknown.path} is unknown (its bitmap may have been cleared)", pending,
        )
    if not ledger.issued(anchor.bitmap):
        return ChainState(
            chain, None,
            f"adopting: bitmap '{anchor.bitmap}' is not owned by this ledger (a chain from before "
            "owned bitmap names); a full backup starts an owned chain", pending,
        )
    broken = ledger.breaks(connection, anchor.node, anchor.bitmap)
    if broken:
        return ChainState(chain, None, f"chain broken: {broken[-1].reason}", pending)
    usable = [i for i in chain if i.state in BASE_STATES]
    last = usable[-1]
    what = "last valid image" if last.state is ImageState.VALID else f"last image ({last.state})"
    return ChainState(chain, last, f"{what} {last.path}", pending)
