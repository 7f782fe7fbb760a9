"""Turn QMP query replies of every QEMU generation into the state model.

Reply shapes (docs/qmp-facts.md, "Reply shapes"):
- 1.3–4.1: bitmaps only in ``query-block``'s top-level ``BlockInfo.dirty-bitmaps`` (of the device's
  root node), with ``status`` (active/disabled/frozen, locked since 2.12) and no ``busy``;
- 4.0–5.2: ``recording``/``busy``/``persistent``/``inconsistent`` added, ``status`` deprecated;
- 4.2+: ``dirty-bitmaps`` on ``query-named-block-nodes`` entries and on ``inserted``;
- 6.0+: ``status`` and the top-level ``BlockInfo.dirty-bitmaps`` removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from tui.core.model.state import Bitmap, Job, JobResult, Node, QemuVersion

# Filter nodes QEMU inserts above a device's root during a backup; never a user's node.
FILTER_DRIVERS = frozenset({"copy-before-write", "backup-top", "throttle", "compress"})


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    return default


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_bitmap(raw: Mapping[str, Any]) -> Bitmap:
    """One ``BlockDirtyInfo`` of any generation → :class:`Bitmap`."""
    status = _str(raw.get("status"))
    inconsistent = bool(raw.get("inconsistent")) or status == "inconsistent"
    if "busy" in raw or "recording" in raw:  # 4.0+: authoritative fields
        busy = bool(raw.get("busy"))
        recording = bool(raw.get("recording"))
    elif status is not None:  # 2.4–3.1
        busy = status in ("frozen", "locked")
        recording = status in ("active", "frozen", "locked")
    else:  # < 2.4: every bitmap recorded
        busy, recording = False, True
    if inconsistent:
        busy, recording = False, False
    persistent_raw = raw.get("persistent")
    persistent = persistent_raw if isinstance(persistent_raw, bool) else None
    if inconsistent:
        persistent = True
    name = _str(raw.get("name")) or None
    return Bitmap(
        name=name,
        granularity=max(0, _int(raw.get("granularity"))),
        count=max(0, _int(raw.get("count"))),
        recording=recording,
        busy=busy,
        inconsistent=inconsistent,
        persistent=persistent,
    )


def parse_bitmaps(raw: Any) -> tuple[Bitmap, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(parse_bitmap(b) for b in raw if isinstance(b, Mapping))


def parse_version(raw: Any) -> QemuVersion | None:
    """``query-version`` reply (or the greeting's ``QMP.version``) → :class:`QemuVersion`."""
    if not isinstance(raw, Mapping):
        return None
    q = raw.get("qemu")
    if not isinstance(q, Mapping):
        return None
    return QemuVersion(
        _int(q.get("major")), _int(q.get("minor")), _int(q.get("micro")), _str(raw.get("package")) or ""
    )


_JSON_FILENAME = re.compile(r'"(?:[\w.-]*\.)?filename":\s*"((?:[^"\\]|\\.)*)"')


def clean_file(file: str) -> str:
    """QEMU names a node with filter drivers (e.g. blkdebug) ``json:{...}`` or
    ``blkdebug:CONFIG:IMAGE``; show the image path inside it instead."""
    if file.startswith("json:"):
        m = _JSON_FILENAME.search(file)
        if m:
            return m.group(1)
    if file.startswith("blkdebug:"):
        # blkdebug with a config file: "blkdebug:CONFIG:IMAGE"
        _config, sep, image = file.removeprefix("blkdebug:").partition(":")
        if sep and image:
            return clean_file(image)
    return file


def _visible(entry: Mapping[str, Any]) -> bool:
    """Hide QEMU's implicit nodes ('#block123' protocol and filter nodes) unless they carry a
    named bitmap, which an operator must be able to see and remove."""
    name = _str(entry.get("node-name")) or ""
    if not name.startswith("#"):
        return True
    return any(b.name for b in parse_bitmaps(entry.get("dirty-bitmaps")))


def parse_nodes(named_nodes: Any, block_info: Any) -> dict[str, Node]:
    """``query-named-block-nodes`` + ``query-block`` → nodes keyed by node name.

    The device of a node is found through ``query-block``: the device's ``inserted.node-name`` when
    that is a visible node, otherwise (a backup filter sits on top) the visible node with the same
    image file. Before 4.2 a device's bitmaps are only in ``query-block``'s top-level field and
    belong to its root node.
    """
    entries = [e for e in (named_nodes if isinstance(named_nodes, list) else []) if isinstance(e, Mapping)]
    devices = [b for b in (block_info if isinstance(block_info, list) else []) if isinstance(b, Mapping)]
    nodes, by_file = _named_nodes(entries)
    for b in devices:
        inserted = b.get("inserted")
        if not isinstance(inserted, Mapping):
            continue
        target = _device_node(inserted, nodes, by_file)
        if target is None:
            continue
        node = nodes[target]
        legacy = b.get("dirty-bitmaps")  # < 6.0 only
        bitmaps = node.bitmaps
        if not bitmaps and isinstance(legacy, list) and "dirty-bitmaps" not in _entry_of(entries, target):
            bitmaps = parse_bitmaps(legacy)
        device = _str(b.get("device")) or None
        nodes[target] = Node(
            node_name=node.node_name,
            driver=node.driver,
            file=node.file,
            size=node.size,
            read_only=node.read_only,
            device=device if device else node.device,
            bitmaps=bitmaps,
        )
    return nodes


def _named_nodes(entries: list[Mapping[str, Any]]) -> tuple[dict[str, Node], dict[str, str]]:
    """The visible nodes of ``query-named-block-nodes`` by name, and the first data node (not a
    filter, not implicit) of each image file."""
    nodes: dict[str, Node] = {}
    by_file: dict[str, str] = {}
    for e in entries:
        name = _str(e.get("node-name"))
        if not name or not _visible(e):
            continue
        nodes[name] = _node(name, e, parse_bitmaps(e.get("dirty-bitmaps")))
        drv = nodes[name].driver
        file = nodes[name].file
        if drv not in FILTER_DRIVERS and not name.startswith("#") and file:
            by_file.setdefault(file, name)
    return nodes, by_file


def _node(name: str, entry: Mapping[str, Any], bitmaps: tuple[Bitmap, ...] = ()) -> Node:
    """A node (no device yet) from a ``query-named-block-nodes`` entry or a device's
    ``inserted``: the two share these fields."""
    image = entry.get("image") if isinstance(entry.get("image"), Mapping) else {}
    return Node(
        node_name=name,
        driver=_str(entry.get("drv")) or "",
        file=clean_file(_str(entry.get("file")) or ""),
        size=_int(image.get("virtual-size") if image else None),
        read_only=bool(entry.get("ro")),
        bitmaps=bitmaps,
    )


def _device_node(inserted: Mapping[str, Any], nodes: dict[str, Node],
                 by_file: dict[str, str]) -> str | None:
    """The name of the node a device's medium is: its root when visible and not a filter, else
    the data node of the same file; a root missing from ``nodes`` (QEMU < 2.0, or a node list we
    could not read) is added from ``inserted``."""
    root = _str(inserted.get("node-name"))
    target = root if root in nodes and nodes[root].driver not in FILTER_DRIVERS else None
    if target is None:
        target = by_file.get(clean_file(_str(inserted.get("file")) or ""))
    if target is None and root and root not in nodes:
        nodes[root] = _node(root, inserted)
        target = root
    return target


def _entry_of(entries: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    for e in entries:
        if e.get("node-name") == name:
            return e
    return {}


def result_of(status: str | None, error: str | None) -> JobResult | None:
    """A finished job's result from its final status and error text."""
    if status not in ("concluded", "null"):
        return None
    if error:
        return JobResult.CANCELLED if "cancel" in error.lower() else JobResult.FAILED
    return JobResult.COMPLETED


def parse_jobs(query_jobs: Any, query_block_jobs: Any) -> dict[str, Job]:
    """``query-jobs`` (3.0+) and/or ``query-block-jobs`` → jobs keyed by id.

    ``query-jobs`` lists every job (also blockdev-create); ``query-block-jobs`` adds speed and
    ``paused`` for block jobs and is the only source before 3.0 (no status before 2.12).
    """
    jobs: dict[str, Job] = {}
    for raw in query_jobs if isinstance(query_jobs, list) else []:
        if not isinstance(raw, Mapping) or not _str(raw.get("id")):
            continue
        jid = str(raw["id"])
        status = _str(raw.get("status")) or "undefined"
        total = max(0, _int(raw.get("total-progress")))
        error = _str(raw.get("error"))
        jobs[jid] = Job(
            id=jid,
            type=_str(raw.get("type")) or "?",
            status=status,
            current=min(max(0, _int(raw.get("current-progress"))), total) if total else 0,
            total=total,
            paused=status == "paused",
            error=error,
            result=result_of(status, error),
        )
    for raw in query_block_jobs if isinstance(query_block_jobs, list) else []:
        if not isinstance(raw, Mapping) or not _str(raw.get("device")):
            continue
        jid = str(raw["device"])
        total = max(0, _int(raw.get("len")))
        current = min(max(0, _int(raw.get("offset"))), total) if total else 0
        status = _str(raw.get("status")) or ("paused" if raw.get("paused") else "running")
        error = _str(raw.get("error"))
        prev = jobs.get(jid)
        jobs[jid] = Job(
            id=jid,
            type=_str(raw.get("type")) or (prev.type if prev else "?"),
            status=prev.status if prev else status,
            current=current,
            total=total,
            speed=max(0, _int(raw.get("speed"))),
            paused=bool(raw.get("paused")),
            error=(prev.error if prev else None) or error,
            result=prev.result if prev else result_of(status, error),
        )
    return jobs
