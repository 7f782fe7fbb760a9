"""Every QEMU generation's reply shape maps to the same state (docs/qmp-facts.md, "Reply shapes").

The replies below are recorded shapes: 7.2 from the real QEMU here, older ones from the QAPI
schema of their release (top-level BlockInfo.dirty-bitmaps before 4.2, `status` before 6.0).
"""

from __future__ import annotations

from tests.kit.replies import Q26_BLOCK, Q26_NAMED
from tui.core.model.parse import parse_bitmap, parse_jobs, parse_nodes
from tui.core.model.state import BitmapState, JobResult

# ---- QEMU 2.6: bitmaps only in query-block's top level, `status` only, no busy/recording
# (Q26_BLOCK, Q26_NAMED: in tests/kit/replies.py, shared with the refresh tests).
# ---- QEMU 3.0: `locked` status (NBD export / migration).
Q30_BLOCK = [dict(Q26_BLOCK[0], **{"dirty-bitmaps": [
    {"name": "bm-lck", "status": "locked", "granularity": 65536, "count": 512}]})]

# ---- QEMU 4.0/4.1: both `status` and the new fields, still only in query-block's top level.
Q40_BLOCK = [dict(Q26_BLOCK[0], **{"dirty-bitmaps": [
    {"name": "bm-act", "status": "active", "recording": True, "busy": False, "persistent": True,
     "granularity": 65536, "count": 1048576},
    {"name": "bm-inc", "status": "inconsistent", "recording": False, "busy": False,
     "persistent": True, "inconsistent": True, "granularity": 65536, "count": 0},
    {"name": "bm-frz", "status": "frozen", "recording": True, "busy": True, "persistent": False,
     "granularity": 65536, "count": 4096},
    # 4.x reports `locked` while busy; the authoritative fields say frozen (busy).
    {"name": "bm-lck", "status": "locked", "recording": True, "busy": True, "persistent": False,
     "granularity": 65536, "count": 0},
]})]

# ---- QEMU 5.2: dirty-bitmaps on named nodes AND (deprecated) top level: nodes win, no duplicates.
Q52_NAMED = [dict(Q26_NAMED[0], **{"dirty-bitmaps": [
    {"name": "bm-act", "status": "active", "recording": True, "busy": False, "persistent": False,
     "granularity": 65536, "count": 1048576}]})]
Q52_BLOCK = [dict(Q26_BLOCK[0], **{"dirty-bitmaps": Q52_NAMED[0]["dirty-bitmaps"]})]

# ---- QEMU 7.2 (recorded here) during a backup: the device's root is the cbw filter.
Q72_NAMED = [
    {"node-name": "#block5953", "drv": "copy-before-write", "file": "/img/d0.qcow2", "ro": False,
     "image": {"virtual-size": 67108864},
     "dirty-bitmaps": [{"recording": False, "persistent": False, "busy": False,
                        "granularity": 65536, "count": 67108864}]},
    {"node-name": "disk0", "drv": "qcow2", "file": "/img/d0.qcow2", "ro": False,
     "image": {"virtual-size": 67108864},
     "dirty-bitmaps": [
         {"recording": False, "persistent": False, "busy": False, "granularity": 65536, "count": 15728640},
         {"recording": True, "persistent": False, "busy": False, "granularity": 65536, "count": 0},
         {"name": "dis", "recording": False, "persistent": False, "busy": False, "granularity": 65536, "count": 0},
         {"name": "bm0", "recording": True, "persistent": False, "busy": True, "granularity": 65536,
          "count": 16777216},
     ]},
    {"node-name": "#block032", "drv": "file", "file": "/img/d0.qcow2", "ro": False,
     "image": {"virtual-size": 67305472}},
]
Q72_BLOCK = [{"device": "drive0", "inserted": {"node-name": "#block5953", "drv": "copy-before-write",
                                               "file": "/img/d0.qcow2", "ro": False}}]


def states(node):
    return {bm.name: bm.state for bm in node.bitmaps}


def test_qemu_2_6_top_level_status():
    nodes = parse_nodes(Q26_NAMED, Q26_BLOCK)
    d0 = nodes["disk0"]
    assert d0.device == "drive0" and d0.size == 67108864
    assert states(d0) == {
        "bm-act": BitmapState.ACTIVE,
        "bm-dis": BitmapState.DISABLED,
        "bm-frz": BitmapState.FROZEN,
        None: BitmapState.ACTIVE,
    }
    assert d0.bitmap("bm-act").persistent is None  # unknown before 4.0


def test_qemu_3_0_locked_is_frozen():
    d0 = parse_nodes(Q26_NAMED, Q30_BLOCK)["disk0"]
    assert states(d0) == {"bm-lck": BitmapState.FROZEN}


def test_qemu_4_0_authoritative_fields():
    d0 = parse_nodes(Q26_NAMED, Q40_BLOCK)["disk0"]
    assert states(d0) == {
        "bm-act": BitmapState.ACTIVE,
        "bm-inc": BitmapState.INCONSISTENT,
        "bm-frz": BitmapState.FROZEN,
        "bm-lck": BitmapState.FROZEN,
    }
    assert d0.bitmap("bm-act").persistent is True
    inc = d0.bitmap("bm-inc")
    assert inc.inconsistent and not inc.busy and not inc.recording


def test_qemu_5_2_node_bitmaps_not_duplicated():
    d0 = parse_nodes(Q52_NAMED, Q52_BLOCK)["disk0"]
    assert [b.name for b in d0.bitmaps] == ["bm-act"]


def test_qemu_7_2_during_backup_filter_hidden_device_kept():
    nodes = parse_nodes(Q72_NAMED, Q72_BLOCK)
    assert list(nodes) == ["disk0"]  # filter and protocol nodes are QEMU's, not the user's
    d0 = nodes["disk0"]
    assert d0.device == "drive0"  # found through the image file, past the filter
    assert states(d0) == {None: BitmapState.ACTIVE, "dis": BitmapState.DISABLED, "bm0": BitmapState.FROZEN}
    assert sum(1 for b in d0.bitmaps if b.anonymous) == 2


def test_every_generation_gives_one_of_four_states():
    for raw in (
        {}, {"status": "weird"}, {"busy": True, "inconsistent": True}, {"recording": "yes"},
        {"count": -5, "granularity": "x"},
    ):
        bm = parse_bitmap(raw)
        assert bm.state in set(BitmapState)
        assert bm.count >= 0 and bm.granularity >= 0


def test_jobs_old_and_new_shapes():
    # 2.6: query-block-jobs only, no status
    old = parse_jobs(None, [{"device": "drive0", "type": "backup", "len": 100, "offset": 40,
                             "busy": True, "paused": False, "speed": 0, "io-status": "ok"}])
    assert old["drive0"].status == "running" and old["drive0"].progress == 0.4
    # 7.2: both, merged; concluded with error → failed; cancel text → cancelled
    new = parse_jobs(
        [{"id": "j0", "type": "backup", "status": "running", "current-progress": 5, "total-progress": 10},
         {"id": "j1", "type": "backup", "status": "concluded", "current-progress": 3,
          "total-progress": 10, "error": "Input/output error"},
         {"id": "j2", "type": "backup", "status": "concluded", "current-progress": 3,
          "total-progress": 10, "error": "Operation cancelled"}],
        [{"device": "j0", "type": "backup", "len": 10, "offset": 6, "paused": True, "speed": 65536,
          "status": "paused"}],
    )
    assert new["j0"].paused and new["j0"].speed == 65536 and new["j0"].current == 6
    assert new["j1"].result is JobResult.FAILED and new["j2"].result is JobResult.CANCELLED
    # progress is clamped into the total
    odd = parse_jobs([{"id": "x", "type": "backup", "status": "running", "current-progress": 50,
                       "total-progress": 10}], None)
    assert odd["x"].current == 10
