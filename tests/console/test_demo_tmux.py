"""`bitmap-tui demo` in a real terminal (tmux, 80x24): the demo's drives and bitmaps on screen,
then quit (q, ctrl+c or SIGTERM) and nothing is left: no QEMU process, no scratch file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.kit.common import qemu_running_in, requires_qemu

BIN = Path(sys.executable).with_name("bitmap-tui")

pytestmark = [
    requires_qemu,
    pytest.mark.skipif(shutil.which("tmux") is None and not os.environ.get("CI"), reason="no tmux"),
]


def wait_until(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Tmux:
    def __init__(self) -> None:
        self.sock = f"bt-demo-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True,
                              check=check, timeout=30)

    def screen(self) -> str:
        res = self.run("capture-pane", "-p", "-t", "demo", check=False)
        return res.stdout if res.returncode == 0 else ""

    def alive(self) -> bool:
        return self.run("has-session", "-t", "demo", check=False).returncode == 0

    def pid(self) -> int:
        return int(self.run("display-message", "-p", "-t", "demo", "#{pane_pid}").stdout.strip())

    def kill(self) -> None:
        self.run("kill-server", check=False)


@pytest.mark.parametrize("how", ["q", "ctrl+c", "SIGTERM", "default-q"])
def test_demo_in_tmux_shows_bitmaps_and_leaves_nothing(tmp_path, how):
    """``default-q``: plain ``bitmap-tui`` with no connection and no config opens the same demo."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(scratch),
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "TERM": "xterm-256color",
    }
    env.pop("TMUX", None)
    tmux = Tmux()
    try:
        # `exec` so the pane's process is bitmap-tui itself (SIGTERM goes straight to it).
        cmd = f"exec {BIN}" if how.startswith("default") else f"exec {BIN} demo"
        subprocess.run(
            ["tmux", "-L", tmux.sock, "new-session", "-d", "-s", "demo", "-x", "80", "-y", "24", cmd],
            env=env, check=True, timeout=30,
        )
        wanted = ["disk0", "disk1", "nightly", "paused", "crashed", "bitmap0", "in-backup",
                  "active", "disabled", "frozen", "inconsistent"]
        try:
            wait_until(lambda: all(w in tmux.screen() for w in wanted), 60, "the demo on screen")
        except AssertionError:
            raise AssertionError("missing on screen:\n" + tmux.screen()) from None
        workdirs = list(scratch.iterdir())
        assert len(workdirs) == 1 and qemu_running_in(workdirs[0])
        if how in ("q", "default-q"):
            tmux.run("send-keys", "-t", "demo", "q")
        elif how == "ctrl+c":
            tmux.run("send-keys", "-t", "demo", "C-c")
        else:
            os.kill(tmux.pid(), signal.SIGTERM)
        wait_until(lambda: not tmux.alive(), 30, "bitmap-tui to exit")
        wait_until(lambda: not qemu_running_in(workdirs[0]), 10, "QEMU to go")
        assert list(scratch.iterdir()) == []
        # nothing written to the user's config or state directories either
        assert not (tmp_path / "state").exists() or not any((tmp_path / "state").rglob("*.qcow2"))
    finally:
        tmux.kill()


async def test_config_file_drives_the_app_in_tmux(tmp_path, make_sandbox):
    """Connections, read-only and the keymap come from --config FILE (a real QEMU)."""
    import asyncio

    sb = await make_sandbox(drives=1)
    await sb.add_bitmap(0, "from-config")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "defaults:\n  read_only: true\n  theme: light\n"
        f"connections:\n  cfgvm: unix:{sb.socket}\n"
        "keymap:\n  app.quit: ctrl+q\n"
    )
    await asyncio.to_thread(_run_configured, tmp_path, cfg)


def _run_configured(tmp_path: Path, cfg: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path / "home"), "TERM": "xterm-256color",
           "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_STATE_HOME": str(tmp_path / "st")}
    env.pop("TMUX", None)
    tmux = Tmux()
    try:
        subprocess.run(
            ["tmux", "-L", tmux.sock, "new-session", "-d", "-s", "demo", "-x", "80", "-y", "24",
             f"exec {BIN} --config {cfg}"], env=env, check=True, timeout=30,
        )
        wanted = ("cfgvm", "connected", "disk0", "from-config")
        try:
            wait_until(lambda: all(w in tmux.screen() for w in wanted), 30, "the connection")
        except AssertionError:
            raise AssertionError("missing on screen:\n" + tmux.screen()) from None
        screen = tmux.screen()
        assert "Add" not in screen and "Remove" not in screen, "read-only offers no mutation"
        assert "^q Quit" in screen, "the footer shows the remapped key"
        tmux.run("send-keys", "-t", "demo", "q")  # remapped away: q no longer quits
        time.sleep(0.5)
        assert tmux.alive()
        tmux.run("send-keys", "-t", "demo", "C-q")
        wait_until(lambda: not tmux.alive(), 30, "ctrl+q to quit")
    finally:
        tmux.kill()
