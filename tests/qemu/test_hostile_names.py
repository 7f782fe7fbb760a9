"""One escape rule for every output: hostile bitmap names created on a real QEMU (control
characters, an OSC retitle, Rich markup, a newline, QEMU's longest name) reach no command's text
output as raw control characters."""

from __future__ import annotations

import asyncio
import json

import yaml

from tests.kit.chains import cli
from tests.kit.common import requires_qemu
from tests.kit.hostile import HOSTILE, raw_controls

pytestmark = requires_qemu


async def test_every_command_escapes_hostile_bitmap_names(make_sandbox, setup):
    sb = await make_sandbox(drives=2)
    for name in HOSTILE:
        await sb.add_bitmap(0, name)
    cfg, env = setup(sb, keep={"last": 1})
    conn = ["--connect", f"vm0={sb.address}", "--config", str(cfg)]
    first = await asyncio.to_thread(cli, ["backup", "nightly", *conn], env)
    assert first.returncode == 0, first.stderr
    txn = cfg.parent / "t.yaml"
    txn.write_text(yaml.safe_dump({"actions": [
        {"type": "block-dirty-bitmap-add", "data": {"node": "disk1", "name": n}}
        for n in HOSTILE]}))
    runs = {
        "status": ["status", *conn],
        "chains": ["chains", *conn],
        "points": ["points", *conn],
        "verify": ["verify", *conn],
        "backup --plan": ["backup", "nightly", "--plan", *conn],
        "prune --dry-run": ["prune", "nightly", "--dry-run", *conn],
        "apply": ["apply", str(txn), "--yes", *conn],
    }
    found = {}
    for what, args in runs.items():
        res = await asyncio.to_thread(cli, args, env)
        assert "Traceback" not in res.stderr, (what, res.stderr[-2000:])
        bad = raw_controls(res.stdout + res.stderr)
        if bad:
            found[what] = bad
    assert not found, found
    # The escaped names are there, visibly: the owner lines of chains, the nodes of status.
    shown = await asyncio.to_thread(cli, ["chains", *conn], env)
    assert "\\x1b]0;PWNED\\x07\\x1b[2J" in shown.stdout
    status = await asyncio.to_thread(cli, ["status", "--json", *conn], env)
    # JSON keeps the name exact (escaped by JSON itself).
    assert json.dumps(HOSTILE[0])[1:-1] in status.stdout
