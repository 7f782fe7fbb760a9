"""What tests of every folder use: the repository's root, waiting on a condition, the QEMU
marker, a policy as the config file gives it, and a look at the QEMU processes."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tui.core.chains.policy import Policy
from tui.core.config import Config, load_config
from tui.core.model.state import LinkState
from tui.core.qmp.fleet import Fleet
from tui.demo.sandbox import qemu_available

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample-configs"

requires_qemu = pytest.mark.skipif(qemu_available() is not None, reason=str(qemu_available()))


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (by polling the state, never by fixed sleeps) until predicate() holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def connected(fleet: Fleet, name: str = "vm0") -> bool:
    return fleet.store.connection(name).state is LinkState.CONNECTED


def make_policy(name: str, settings: dict) -> Policy:
    """A policy as the config file would give it: through the config's validator (the only
    one), with its connection declared."""
    conn = settings.get("connection", "vm0")
    doc = {"connections": {conn: "unix:/nonexistent/qmp.sock"}, "policies": {name: settings}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(doc))
        return load_config(path).policies[name]


def qemu_running_in(path) -> bool:
    """Is a QEMU process with ``path`` on its command line alive (zombies do not count)?"""
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if "qemu-system" in args and str(path) in args and status != "Z":
            return True
    return False


# One policy "p" on connection vm0; ``%s`` is further YAML (indented for the policy, or top-level).
ONE_POLICY_CONFIG = ("connections:\n  vm0: unix:/run/q.sock\npolicies:\n  p:\n    connection: vm0\n"
                     "    drives: [drive0]\n    target_dir: /b\n%s")


def one_policy_config(tmp_path: Path, extra: str) -> Config:
    """The config of :data:`ONE_POLICY_CONFIG` with ``extra`` (its line 8 is the first of it)."""
    path = tmp_path / "c.yaml"
    path.write_text(ONE_POLICY_CONFIG % extra)
    return load_config(path)


def append_stdin_command(path: Path) -> tuple[str, ...]:
    """An argv that appends its stdin to ``path`` (a notify_command for the tests)."""
    return (sys.executable, "-c", f"import sys; open({str(path)!r}, 'a').write(sys.stdin.read())")
