"""Bitmap operations: add, clear, enable, disable, merge, remove — validated, then sent.

Validation follows QEMU's own checks (docs/qmp-facts.md, "Bitmap commands") so the operator gets the
reason before anything is sent; QEMU still has the last word, and its desc is shown unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tui.core.base.limits import bitmap_name_problem, granularity_problem
from tui.core.model.state import Bitmap, BitmapState, ConnectionModel, Job, Node
from tui.core.ops.common import Check, Outcome, Target, refused, run

GRANULARITY_PRESETS = (512, 4096, 65536, 2**20, 2**26)

@dataclass(frozen=True, slots=True)
class Verb:
    """An operation on one existing bitmap that takes just its node and name."""

    command: str
    past: str  # for the outcome line: "bitmap 'x' on n0 cleared"


# The simple verbs; adding one is an entry here and one in the console's key registry.
VERBS = {
    "clear": Verb("block-dirty-bitmap-clear", "cleared"),
    "enable": Verb("block-dirty-bitmap-enable", "enabled"),
    "disable": Verb("block-dirty-bitmap-disable", "disabled"),
    "remove": Verb("block-dirty-bitmap-remove", "removed"),
}
# Everything that can be done to an existing bitmap ("merge" means merging INTO it).
ACTIONS = ("clear", "enable", "disable", "merge", "remove")

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class BitmapRef:
    """A bitmap by node name and bitmap name (always by node: docs/qmp-facts.md)."""

    node: str
    name: str

    def __str__(self) -> str:
        return f"{self.node}/{self.name}"


def parse_granularity(text: str) -> int:
    """'65536', '64K', '64 KiB', '1M', '2G' → bytes. Raises ValueError with a readable reason."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"granularity '{text.strip()}' is not a size (e.g. 65536, 64K, 1M)")
    factor = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2).lower()]
    return int(m.group(1)) * factor


def check_add(node: Node | None, name: str, granularity: int | None = None,
              persistent: bool = False) -> Check:
    """Validate a new bitmap on ``node``."""
    if node is None:
        return Check(refusal="no such node")
    problem = bitmap_name_problem(name)
    if problem:
        return Check(refusal=problem)
    if node.bitmap(name) is not None:
        return Check(refusal=f"a bitmap named '{name}' already exists on {node.node_name}")
    if granularity is not None:
        reason = granularity_problem(granularity)
        if reason:
            return Check(refusal=reason)
    if persistent and node.driver != "qcow2":
        return Check(warning=f"{node.node_name} is {node.driver or 'not qcow2'}: only qcow2 images "
                             "can store persistent bitmaps; QEMU will probably refuse")
    return Check()


def frozen_by(node: Node, jobs: Iterable[Job]) -> str:
    """Which job holds a frozen bitmap of ``node``: "job X" (or "jobs X, Y") when the jobs on
    the node are known, else "a job"."""
    ids = [j.id for j in jobs if j.node == node.node_name and not j.finished]
    if not ids:
        return "a job"
    return ("job " if len(ids) == 1 else "jobs ") + ", ".join(ids)


def check_action(node: Node | None, name: str, action: str, jobs: Iterable[Job] = ()) -> Check:
    """May ``action`` (clear/enable/disable/merge/remove) be applied to this bitmap? ``jobs``
    (the connection's) name the job holding a frozen bitmap."""
    if node is None:
        return Check(refusal="no such node")
    bm = node.bitmap(name)
    if bm is None:
        return Check(refusal=f"no bitmap '{name}' on {node.node_name}")
    state = bm.state
    if state is BitmapState.FROZEN:
        return Check(refusal=f"bitmap '{name}' on {node.node_name} is frozen (in use by "
                             f"{frozen_by(node, jobs)}): nothing can be done with it until the "
                             "job ends")
    if state is BitmapState.INCONSISTENT and action != "remove":
        return Check(refusal=f"bitmap '{name}' on {node.node_name} is inconsistent (not saved "
                             "cleanly): it can only be removed")
    return Check()


def allowed_actions(node: Node, bm: Bitmap) -> list[str]:
    """The actions worth offering for this bitmap (enable only when disabled, and so on)."""
    if bm.name is None:
        return []
    out = [a for a in ACTIONS if check_action(node, bm.name, a).ok]
    if bm.recording and "enable" in out:
        out.remove("enable")
    if not bm.recording and "disable" in out:
        out.remove("disable")
    return out


def check_merge(conn: ConnectionModel, target: BitmapRef, sources: list[BitmapRef]) -> Check:
    """Merge ``sources`` (on any node of this connection) into ``target``; never an empty list."""
    if not sources:
        return Check(refusal="choose at least one source bitmap to merge")
    tcheck = check_action(conn.node(target.node), target.name, "merge")
    if not tcheck.ok:
        return tcheck
    for src in sources:
        if src == target:
            return Check(refusal=f"bitmap '{target.name}' cannot be merged into itself")
        node = conn.node(src.node)
        bm = node.bitmap(src.name) if node else None
        if node is None or bm is None:
            return Check(refusal=f"source bitmap {src} does not exist")
        if bm.state is BitmapState.FROZEN:
            return Check(refusal=f"source bitmap {src} is frozen (in use by a job)")
        if bm.state is BitmapState.INCONSISTENT:
            return Check(refusal=f"source bitmap {src} is inconsistent and cannot be used")
    return Check()


def merge_arguments(target: BitmapRef, sources: list[BitmapRef]) -> dict[str, Any]:
    """Sources on the target's node by name, others as ``{node, name}`` (QEMU 4.1+)."""
    bitmaps: list[Any] = [
        s.name if s.node == target.node else {"node": s.node, "name": s.name} for s in sources
    ]
    return {"node": target.node, "target": target.name, "bitmaps": bitmaps}


# ------------------------------------------------------------------------------ execution


async def add(target: Target, node_name: str, name: str, *, granularity: int | None = None,
              persistent: bool = False, disabled: bool = False) -> Outcome:
    """``block-dirty-bitmap-add`` after :func:`check_add`."""
    check = check_add(target.model.node(node_name), name, granularity, persistent)
    if not check.ok:
        return refused(check.refusal or "")
    args: dict[str, Any] = {"node": node_name, "name": name}
    if granularity is not None:
        args["granularity"] = granularity
    if persistent:
        args["persistent"] = True
    if disabled:
        args["disabled"] = True
    return await run(target, "block-dirty-bitmap-add", args,
                     f"bitmap '{name}' added to {node_name}", check.warning)


async def act(target: Target, node_name: str, name: str, action: str) -> Outcome:
    """clear / enable / disable / remove one bitmap after :func:`check_action`."""
    verb = VERBS.get(action)
    if verb is None:
        return refused(f"unknown bitmap action '{action}'")
    check = check_action(target.model.node(node_name), name, action,
                         target.model.jobs.values())
    if not check.ok:
        return refused(check.refusal or "")
    return await run(target, verb.command, {"node": node_name, "name": name},
                     f"bitmap '{name}' on {node_name} {verb.past}")


async def merge(target: Target, into: BitmapRef, sources: list[BitmapRef]) -> Outcome:
    """``block-dirty-bitmap-merge`` after :func:`check_merge` (never with no sources)."""
    check = check_merge(target.model, into, sources)
    if not check.ok:
        return refused(check.refusal or "")
    names = ", ".join(str(s) for s in sources)
    return await run(target, "block-dirty-bitmap-merge", merge_arguments(into, sources),
                     f"merged {names} into '{into.name}' on {into.node}")
