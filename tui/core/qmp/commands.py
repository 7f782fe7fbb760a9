"""What may be sent: the read-only allow-list and the commands refused because they harm QEMU."""

from __future__ import annotations

from typing import Any

from tui.core.base.errors import ValidationError

# Commands that only read state: everything else mutates (allow-list, so a new QEMU command is
# refused in read-only mode until someone decides it is safe).
READ_ONLY_COMMANDS = frozenset(
    {"qmp_capabilities", "x-debug-block-dirty-bitmap-sha256", "query-block-jobs", "query-jobs"}
)


def is_mutating(command: str) -> bool:
    return not (command.startswith("query-") or command in READ_ONLY_COMMANDS)


def _merge_sources(args: dict[str, Any] | None) -> bool:
    sources = (args or {}).get("bitmaps")
    return isinstance(sources, list) and len(sources) > 0


def guard_command(command: str, args: dict[str, Any] | None) -> None:
    """Refuse commands that are known to harm QEMU, whatever layer asked for them.

    QEMU 7.2 segfaults on ``block-dirty-bitmap-merge`` with an empty source list (docs/qmp-facts.md),
    also inside a transaction.
    """
    if command == "block-dirty-bitmap-merge" and not _merge_sources(args):
        raise ValidationError("refused: block-dirty-bitmap-merge needs at least one source bitmap")
    if command == "transaction" and args:
        for action in args.get("actions") or []:
            if isinstance(action, dict) and action.get("type") == "block-dirty-bitmap-merge":
                if not _merge_sources(action.get("data")):
                    raise ValidationError(
                        "refused: a block-dirty-bitmap-merge action has no source bitmap"
                    )
