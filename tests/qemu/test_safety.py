"""Safety: the audit log records every mutating command (and nothing else), read-only is enforced
in the core, sessions that may mutate are audited by default, and no shell is ever used."""

from __future__ import annotations

import argparse
import ast
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kit.common import ROOT, requires_qemu
from tui.cli.main import build_parser
from tui.cli.options import session_of
from tui.core.base.audit import AuditLog, changes, open_audit, read_entries
from tui.core.base.errors import (
    CommandTimeoutError,
    ConfigError,
    QMPCommandError,
    ReadOnlyError,
    ValidationError,
)
from tui.core.base.paths import default_audit_path
from tui.core.qmp.commands import is_mutating

TUI = ROOT / "tui"


def entries(path: Path) -> list[dict[str, Any]]:
    """Each audited change once (intent joined with its outcome)."""
    return changes(path)


# ------------------------------------------------------------------ audit log


@requires_qemu
async def test_every_mutating_command_is_audited_and_queries_are_not(sandbox, fleet_for, tmp_path):
    log_path = tmp_path / "audit.jsonl"
    audit = AuditLog(log_path)
    fleet = await fleet_for(sandbox, audit=audit)
    conn = fleet["vm0"]
    before = time.time()
    await conn.execute("block-dirty-bitmap-add", {"node": "disk0", "name": "bm0"})
    with pytest.raises(QMPCommandError):
        await conn.execute("block-dirty-bitmap-add", {"node": "disk0", "name": "bm0"})
    await conn.execute("query-block")
    await conn.execute("query-named-block-nodes")
    await conn.execute("transaction", {"actions": [
        {"type": "block-dirty-bitmap-clear", "data": {"node": "disk0", "name": "bm0"}}]})
    await conn.execute("block-dirty-bitmap-remove", {"node": "disk0", "name": "bm0"})
    audit.close()

    log = entries(log_path)
    assert [e["command"] for e in log] == [
        "block-dirty-bitmap-add", "block-dirty-bitmap-add", "transaction",
        "block-dirty-bitmap-remove",
    ], "queries (the connection's own polling included) are not audited"
    for e in log:
        assert set(e) == {"id", "phase", "time", "connection", "command", "arguments", "outcome",
                          "reply", "error"}
        assert e["connection"] == "vm0" and before - 1 <= e["time"] <= time.time() + 1
        assert e["outcome"], "every intent has its outcome"
    raw = read_entries(log_path)
    assert [e["phase"] for e in raw] == ["intent", "outcome"] * 4
    assert all(raw[i]["id"] == raw[i + 1]["id"] for i in range(0, 8, 2))
    assert len({e["id"] for e in raw}) == 4
    assert log[0]["arguments"] == {"node": "disk0", "name": "bm0"}
    assert log[0]["reply"] == {} and log[0]["error"] is None
    assert log[1]["reply"] is None
    assert log[1]["error"] == "GenericError: Bitmap already exists: bm0"
    assert log[2]["arguments"]["actions"][0]["type"] == "block-dirty-bitmap-clear"
    assert stat.S_IMODE(os.stat(log_path).st_mode) == 0o600


async def test_command_without_answer_is_audited_as_timeout(fake_qmp, fleet_for, tmp_path):
    srv = await fake_qmp()
    srv.hang_on.add("block-dirty-bitmap-add")
    audit = AuditLog(tmp_path / "a.jsonl")
    fleet = await fleet_for(srv.address, audit=audit, command_timeout=0.5)
    with pytest.raises(CommandTimeoutError):
        await fleet["vm0"].execute("block-dirty-bitmap-add", {"node": "n", "name": "b"})
    audit.close()
    (entry,) = entries(tmp_path / "a.jsonl")
    assert entry["command"] == "block-dirty-bitmap-add" and entry["error"] == "timeout"


def test_audit_log_only_appends(tmp_path):
    path = tmp_path / "sub" / "audit.jsonl"
    first = AuditLog(path)
    first.outcome(first.intent("vm0", "block-dirty-bitmap-add", {"node": "n", "name": "a"}),
                  reply={})
    first.close()
    second = AuditLog(path)  # a later session: earlier records stay
    second.outcome(second.intent("vm1", "block-dirty-bitmap-remove", {"node": "n", "name": "a"}),
                   error="x")
    second.close()
    assert [e["connection"] for e in entries(path)] == ["vm0", "vm1"]


def test_default_audit_path_is_in_xdg_state_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_audit_path() == tmp_path / "state" / "bitmap-tui" / "audit.jsonl"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")  # ignored, as the XDG spec says
    assert default_audit_path() == Path.home() / ".local" / "state" / "bitmap-tui" / "audit.jsonl"


def test_unwritable_audit_log_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as err:
        open_audit(blocker / "audit.jsonl")  # its parent is a file
    assert str(err.value).startswith(f"audit log {blocker / 'audit.jsonl'}: ")
    assert "\n" not in str(err.value)


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def _fleet(*argv: str, **options):
    return session_of(_args(*argv)).open_fleet(**options)


async def test_sessions_that_may_mutate_are_audited_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    fleet = _fleet("--connect", "/x.sock")
    assert fleet.audit is not None and fleet.audit.path == tmp_path / "state/bitmap-tui/audit.jsonl"
    assert not fleet.read_only
    own = _fleet("--audit-log", str(tmp_path / "mine.jsonl"))
    assert own.audit is not None and own.audit.path == tmp_path / "mine.jsonl"
    ro = _fleet("--read-only")
    assert ro.read_only and ro.audit is None  # nothing can be sent, nothing to record
    assert _fleet("status", "--connect", "/x.sock", read_only=True).audit is None
    # a subcommand's own --read-only counts as much as the top-level one
    assert _fleet("backup", "p", "--read-only").read_only


async def test_sessions_use_the_configs_audit_log_and_read_only(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(f"defaults:\n  audit_log: {tmp_path / 'cfg-audit.jsonl'}\n")
    fleet = _fleet("--config", str(cfg_path))
    assert fleet.audit is not None and fleet.audit.path == tmp_path / "cfg-audit.jsonl"
    cfg_path.write_text("defaults:\n  read_only: true\n")
    ro = _fleet("--config", str(cfg_path))
    assert ro.read_only and ro.audit is None
    # a read-only session can be narrowed, never widened
    assert _fleet("--config", str(cfg_path), read_only=False).read_only


# ------------------------------------------------------------------ read-only in the core


MUTATING = [
    ("block-dirty-bitmap-add", {"node": "n", "name": "b"}),
    ("block-dirty-bitmap-remove", {"node": "n", "name": "b"}),
    ("block-dirty-bitmap-clear", {"node": "n", "name": "b"}),
    ("block-dirty-bitmap-merge", {"node": "n", "target": "b", "bitmaps": ["a"]}),
    ("transaction", {"actions": []}),
    ("blockdev-backup", {"job-id": "j", "device": "n", "target": "t", "sync": "full"}),
    ("block-job-cancel", {"device": "j"}),
    ("job-dismiss", {"id": "j"}),
    ("blockdev-add", {"driver": "null-co", "node-name": "x"}),
    ("human-monitor-command", {"command-line": "info block"}),
    ("quit", None),
    ("x-some-future-command", None),  # unknown commands are treated as mutating
]


async def test_read_only_core_sends_no_mutating_command(fake_qmp, fleet_for, tmp_path):
    srv = await fake_qmp()
    audit = AuditLog(tmp_path / "a.jsonl")
    fleet = await fleet_for(srv.address, read_only=True, audit=audit)
    conn = fleet["vm0"]
    for command, args in MUTATING:
        assert is_mutating(command)
        with pytest.raises(ReadOnlyError) as err:
            await conn.execute(command, args)
        assert str(err.value) == f"read-only mode: '{command}' was not sent to vm0"
    # Queries still work, and the server saw only queries and the handshake.
    await conn.execute("query-block")
    sent = set(srv.commands)
    assert not sent & {c for c, _ in MUTATING}
    assert all(c.startswith("query-") or c == "qmp_capabilities" for c in sent), sent
    audit.close()
    assert (tmp_path / "a.jsonl").read_text() == ""


async def test_guard_refuses_empty_merge_before_sending(fake_qmp, fleet_for):
    srv = await fake_qmp()
    fleet = await fleet_for(srv.address)
    with pytest.raises(ValidationError):
        await fleet["vm0"].execute("block-dirty-bitmap-merge",
                                   {"node": "n", "target": "b", "bitmaps": []})
    assert "block-dirty-bitmap-merge" not in srv.commands


# ------------------------------------------------------------------ no shell, anywhere


SHELL_CALLS = {"system", "popen", "getoutput", "getstatusoutput", "create_subprocess_shell"}
PROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "create_subprocess_exec"}


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def test_no_subprocess_in_tui_uses_a_shell():
    problems = []
    process_calls = 0
    for path in sorted(TUI.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for call in _calls(tree):
            name = _name(call)
            where = f"{path.relative_to(TUI.parent)}:{call.lineno}"
            if name in SHELL_CALLS:
                problems.append(f"{where}: {name}() runs a shell")
            for kw in call.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    problems.append(f"{where}: shell=")
            if name in PROCESS_CALLS and call.args:
                process_calls += 1
                first = call.args[0]
                # A command given as one string (literal or f-string) is a shell habit: argv lists only.
                if isinstance(first, ast.JoinedStr) or (
                    isinstance(first, ast.Constant) and isinstance(first.value, str)
                ):
                    problems.append(f"{where}: {name}() with a command string")
    assert not problems, problems
    assert process_calls >= 2, "the scan must see the real subprocess calls (qemu-img, QEMU)"


def test_the_scan_catches_a_shell():
    bad = ast.parse("import subprocess, os\nsubprocess.run('ls', shell=True)\nos.system('x')\n")
    names = [_name(c) for c in _calls(bad)]
    assert "system" in names
    assert any(kw.arg == "shell" for c in _calls(bad) for kw in c.keywords)


# ------------------------------------------------------------------ the headless apply is audited


def _apply(*argv: str) -> Any:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "tui", "apply", *argv],
                          capture_output=True, text=True, timeout=120, check=False)


@requires_qemu
async def test_headless_apply_is_audited_in_the_xdg_state_dir(sandbox, tmp_path):
    import asyncio

    txn = tmp_path / "t.yaml"
    txn.write_text("actions:\n  - type: block-dirty-bitmap-add\n"
                   "    data: {node: disk0, name: audited}\n")
    res = await asyncio.to_thread(_apply, str(txn), "--yes", "--connect", sandbox.address)
    assert res.returncode == 0, res.stdout + res.stderr
    log = entries(default_audit_path())  # XDG_STATE_HOME points into the test's tmp dir
    assert [e["command"] for e in log] == ["transaction"]
    assert log[0]["arguments"]["actions"][0]["data"] == {"node": "disk0", "name": "audited"}
    assert log[0]["error"] is None


def test_apply_refuses_to_start_without_a_writable_audit_log(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    txn = tmp_path / "t.yaml"
    txn.write_text("actions:\n  - type: block-dirty-bitmap-add\n    data: {node: d, name: b}\n")
    res = _apply(str(txn), "--yes", "--connect", str(tmp_path / "no.sock"),
                 "--audit-log", str(blocker / "audit.jsonl"))
    assert res.returncode == 2
    assert f"audit log {blocker / 'audit.jsonl'}: " in res.stderr + res.stdout
    assert "Traceback" not in res.stderr
