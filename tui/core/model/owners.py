"""Who a dirty bitmap belongs to, judged from its name alone.

QEMU records no owner for a bitmap, so the name is all there is. Backup tools name their bitmaps
in recognisable ways; bitmap-tui's own policy bitmaps are named ``bt.<ledger-id>.<policy>.c<n>``
(see :mod:`tui.core.chains.owners`), so bitmaps of other bitmap-tui ledgers are recognised too.

The table of known tools is data (:data:`KNOWN_TOOLS`): one row per tool, a regular expression
over the whole name and the label shown as the owner. A name that matches nothing is "unknown":
not ours, listed, never offered for removal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The prefix of every bitmap, job id and node name a bitmap-tui ledger creates.
OWNED_PREFIX = "bt."
# bt.<8 hex digits: the ledger's id>.<policy>.c<chain number>
OWNED_NAME = re.compile(r"^bt\.(?P<ledger>[0-9a-f]{8})\.(?P<policy>.+)\.c(?P<chain>[0-9]+)$")

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class KnownTool:
    """One backup tool's bitmap naming: ``pattern`` must match the whole name."""

    label: str
    pattern: str
    note: str


# Names other tools give their bitmaps. A bitmap of one of these is part of that tool's chain:
# removing or clearing it breaks that tool's next incremental backup.
KNOWN_TOOLS: tuple[KnownTool, ...] = (
    KnownTool("Proxmox Backup Server", r"pbs-incremental-dirty-bitmap",
              "Proxmox VE's backup to PBS keeps one bitmap per drive under this name"),
    KnownTool("virtnbdbackup", r"virtnbdbackup\.[0-9]+",
              "virtnbdbackup names its libvirt checkpoints (and so their bitmaps) virtnbdbackup.N"),
    KnownTool("qmpbackup", r"qmpbackup-.+-[0-9a-fA-F-]{8,}",
              "qmpbackup names its bitmaps qmpbackup-<node>-<uuid>"),
    KnownTool("Veeam", r"VeeamTmp_.*", "Veeam's agentless backup leaves VeeamTmp_ bitmaps"),
    KnownTool("libvirt checkpoint", r"[0-9]{9,}",
              "libvirt names a checkpoint's bitmap after the checkpoint; its default checkpoint "
              "name is the creation time in seconds since 1970"),
    KnownTool("libvirt", r"libvirt-tmp-activewrite|backup-(?:vd|sd|hd|xvd)[a-z]+",
              "libvirt's temporary bitmaps during a block copy or a pull-mode backup"),
)
_COMPILED = tuple((t, re.compile(t.pattern)) for t in KNOWN_TOOLS)


def known_tool(name: str) -> KnownTool | None:
    """The tool whose naming ``name`` follows, or None."""
    for tool, rx in _COMPILED:
        if rx.fullmatch(name):
            return tool
    return None


def owned_ledger(name: str) -> str | None:
    """The ledger id in a bitmap-tui policy bitmap's name (``bt.<id>...``), else None."""
    m = OWNED_NAME.match(name)
    return m.group("ledger") if m else None


def owner_label(name: str | None, ledger_id: str | None = None) -> str | None:
    """The owner shown for a bitmap: ``this ledger`` (when ``ledger_id`` is given and matches),
    ``bitmap-tui ledger <id>``, a known tool's label, or ``unknown``; None for an anonymous one."""
    if not name:
        return None
    lid = owned_ledger(name)
    if lid is not None:
        return "this ledger" if lid == ledger_id else f"bitmap-tui ledger {lid}"
    tool = known_tool(name)
    return tool.label if tool is not None else UNKNOWN


def short_name(name: str) -> str:
    """What a bitmap is, in few characters: ``<policy>·c<n>`` for a bitmap-tui policy bitmap
    (its ``bt.<ledger-id>.`` prefix is the same for every chain of a ledger and would fill a
    narrow column), else the name itself. The full name stays in the details and the JSON."""
    m = OWNED_NAME.match(name)
    if not m:
        return name
    # A chain's companions (``<policy>~sentinel``, ``<policy>~size``) follow their chain.
    policy, _, role = m.group("policy").partition("~")
    return f"{policy}·c{m.group('chain')}" + (f"·{role}" if role else "")
