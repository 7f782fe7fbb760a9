"""State → plain JSON-able dicts, in the shape documented for ``bitmap-tui status --json``."""

from __future__ import annotations

from typing import Any

from tui.core.model.owners import owner_label
from tui.core.model.state import Bitmap, ConnectionModel, FleetState, Job, Node


def _attrs(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """``obj``'s attributes ``names`` as they are, keyed by name (in that order)."""
    return {name: getattr(obj, name) for name in names}


def bitmap_dict(bm: Bitmap) -> dict[str, Any]:
    """One bitmap; ``owner`` is judged from its name (:func:`tui.core.model.owners.owner_label`)."""
    return {
        "name": bm.name,
        "state": str(bm.state),
        **_attrs(bm, ("count", "granularity", "persistent", "recording", "busy", "inconsistent")),
        "owner": owner_label(bm.name),
    }


def node_dict(node: Node) -> dict[str, Any]:
    return {
        **_attrs(node, ("node_name", "device", "driver", "file", "size", "read_only")),
        "bitmaps": [bitmap_dict(b) for b in node.bitmaps],
    }


def job_dict(job: Job) -> dict[str, Any]:
    return {
        **_attrs(job, ("id", "type", "status", "current", "total", "speed", "paused", "node")),
        "result": str(job.result) if job.result else None,
        "error": job.error,
    }


def connection_dict(conn: ConnectionModel) -> dict[str, Any]:
    return {
        "name": conn.name,
        "address": conn.address,
        "state": str(conn.state),
        "error": conn.error,
        "qemu_version": str(conn.version) if conn.version else None,
        "service_role": conn.service_role,
        "nodes": [node_dict(n) for n in conn.nodes.values()],
        "jobs": [job_dict(j) for j in conn.jobs.values()],
    }


def fleet_dict(state: FleetState) -> dict[str, Any]:
    return {"connections": [connection_dict(c) for c in state.connections.values()]}
