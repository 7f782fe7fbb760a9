"""Reply shapes of old QEMUs that more than one test feeds to the parser or a fake QMP server.

Recorded from the QAPI schema of their release (test_parse_generations.py has the other
generations).
"""

from __future__ import annotations

# QEMU 2.6: bitmaps only in query-block's top level, `status` only, no busy/recording.
Q26_BLOCK = [
    {
        "device": "drive0",
        "inserted": {"node-name": "disk0", "drv": "qcow2", "file": "/img/d0.qcow2", "ro": False,
                     "image": {"virtual-size": 67108864}},
        "dirty-bitmaps": [
            {"name": "bm-act", "status": "active", "granularity": 65536, "count": 1048576},
            {"name": "bm-dis", "status": "disabled", "granularity": 65536, "count": 0},
            {"name": "bm-frz", "status": "frozen", "granularity": 131072, "count": 4096},
            {"status": "active", "granularity": 65536, "count": 0},
        ],
    }
]
Q26_NAMED = [{"node-name": "disk0", "drv": "qcow2", "file": "/img/d0.qcow2", "ro": False,
              "image": {"virtual-size": 67108864}}]
