"""``--json`` always answers in JSON: a command refused (bad config, no connection, unknown
policy, nothing to prune by) prints ``{"error": ...}`` on stdout besides its one stderr line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CONFIG = ("connections:\n  vm0: {address: unix:/nonexistent/q.sock}\npolicies:\n"
          "  nightly: {connection: vm0, drives: [drive0], bitmap: bm, target_dir: /b}\n")


def errors_in(doc: object) -> list[str]:
    """Every non-empty ``error`` in a JSON document (``status`` gives one per connection)."""
    if isinstance(doc, dict):
        own = [doc["error"]] if doc.get("error") else []
        return own + [e for v in doc.values() for e in errors_in(v)]
    if isinstance(doc, list):
        return [e for v in doc for e in errors_in(v)]
    return []


@pytest.mark.parametrize("args", [
    ["status"], ["chains"], ["points"], ["verify"], ["backup", "nightly"],
    ["backup", "nightly", "--plan"], ["prune", "nightly", "--dry-run"],
    ["restore", "nightly", "drive0", "--point", "1", "--to", "x.qcow2"],
    ["apply", "t.yaml"],
])
@pytest.mark.parametrize("config", ["bad", "unreachable"])
def test_json_is_printed_when_refused(tmp_path, args, config):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("bad: [\n" if config == "bad" else CONFIG)
    (tmp_path / "t.yaml").write_text(
        "actions:\n  - type: block-dirty-bitmap-add\n    data: {node: disk0, name: b}\n")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "s"),
           "XDG_CONFIG_HOME": str(tmp_path / "c")}
    proc = subprocess.run([sys.executable, "-m", "tui", *args, "--json", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    if proc.returncode == 0:
        return  # nothing refused (an empty ledger reads fine without QEMU)
    assert errors_in(json.loads(proc.stdout)), proc.stdout
    assert "Traceback" not in proc.stderr
