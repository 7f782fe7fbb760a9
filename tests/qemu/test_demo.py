"""The demo's QEMU side against a real QEMU: bitmaps in every state, moving counts, an injected
read failure, and nothing left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.kit.common import qemu_running_in, requires_qemu, wait_for
from tui.core.model.state import BitmapState, JobResult
from tui.core.qmp.address import parse_address
from tui.core.qmp.fleet import Endpoint, Fleet
from tui.demo.vm import BACKUP_JOB, BITMAPS, Demo


@pytest.fixture
async def demo(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    d = Demo(write_interval=0.05, seed=1)
    await d.start()
    yield d
    await d.close()


@requires_qemu
async def test_demo_sets_up_every_state_and_cleans_up(demo, tmp_path):
    fleet = Fleet(job_poll_interval=0.1, refresh_interval=0.2)
    fleet.add(Endpoint("demo", parse_address(demo.address)))
    fleet.start()
    try:
        await fleet.wait_first_answer(10)
        model = lambda: fleet.store.connection("demo")  # noqa: E731

        def state(drive: int, name: str):
            bm = model().nodes[f"disk{drive}"].bitmap(name)
            return None if bm is None else bm.state

        want = {"active": BitmapState.ACTIVE, "disabled": BitmapState.DISABLED,
                "frozen": BitmapState.FROZEN, "inconsistent": BitmapState.INCONSISTENT}
        for b in BITMAPS:
            assert state(b.drive, b.name) is want[b.state], b
        assert {b.state for b in BITMAPS} == set(want)
        assert BACKUP_JOB in model().jobs
        assert model().nodes["disk0"].device == "drive0" and model().nodes["disk1"].device == "drive1"

        # the guest writer moves the active bitmaps' counts, not the disabled one's
        nightly = model().nodes["disk0"].bitmap("nightly").count
        paused = model().nodes["disk0"].bitmap("paused").count
        await wait_for(lambda: demo.writes >= 5, what="guest writes")
        await fleet["demo"].refresh()
        await wait_for(
            lambda: model().nodes["disk0"].bitmap("nightly").count > nightly
            or model().nodes["disk1"].bitmap("bitmap0").count > 0,
            what="dirty counts to grow",
        )
        assert model().nodes["disk0"].bitmap("paused").count == paused

        # a read error on drive1 fails the running backup: the partial failure to watch
        await demo.fail_next_read()
        await wait_for(lambda: model().jobs[BACKUP_JOB].result is JobResult.FAILED, timeout=30,
                       what="the backup to fail")
        assert "Input/output error" in (model().jobs[BACKUP_JOB].error or "")
        await wait_for(lambda: state(1, "in-backup") is BitmapState.ACTIVE, what="bitmap restored")

        # and the backup can be run again (the old job is dismissed first)
        await demo.restart_backup()
        await fleet["demo"].refresh()
        await wait_for(lambda: state(1, "in-backup") is BitmapState.FROZEN, what="frozen again")
        assert demo.backup_job == f"{BACKUP_JOB}-2"
        await wait_for(lambda: demo.backup_job in model().jobs, what="the new job")
        assert model().jobs[demo.backup_job].result is None
    finally:
        await fleet.stop()
    workdir = demo.sandbox.dir
    assert workdir.parent == tmp_path and workdir.exists() and qemu_running_in(workdir)
    await demo.close()
    assert not workdir.exists()
    assert not qemu_running_in(workdir)
    assert list(tmp_path.iterdir()) == []


def test_demo_without_qemu_says_so_in_one_line(tmp_path):
    # PATH without QEMU: the demo explains and gives the install command.
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "tui", "demo"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "qemu-system-x86_64" in lines[0] and "apt-get install" in lines[0]


@requires_qemu
def test_sigterm_while_the_demo_starts_leaves_nothing(tmp_path):
    """SIGTERM as soon as the demo's scratch directory exists (QEMU starting, app not up yet)."""
    import os
    import signal
    import time

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "c"), "XDG_STATE_HOME": str(tmp_path / "s")}
    proc = subprocess.Popen([sys.executable, "-m", "tui", "demo"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 30
        # (only the sandbox's own directory: tempfile's first use probes TMPDIR with a file)
        while not (dirs := list(scratch.glob("bitmap-tui-*"))):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < end, "the demo never created its scratch directory"
            time.sleep(0.005)
        workdir = dirs[0]
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    end = time.monotonic() + 10
    while qemu_running_in(workdir) and time.monotonic() < end:
        time.sleep(0.05)
    assert not qemu_running_in(workdir)
    assert list(scratch.iterdir()) == []
    assert "Traceback" not in (proc.stderr.read().decode() if proc.stderr else "")


def test_demo_options_reach_the_demo(monkeypatch, capsys):
    """`--write-interval` gets to the Demo; a demo that cannot start is one line, exit 2."""
    import tui.cli.demo
    import tui.ui.run
    from tui.cli.main import main
    from tui.demo.sandbox import SandboxError

    seen: list[float] = []

    class FakeDemo:
        def __init__(self, write_interval: float = 0.5) -> None:
            seen.append(write_interval)

        async def start(self):
            raise SandboxError("QEMU exited at start: boom")

        async def close(self) -> None:
            seen.append(-1.0)

    monkeypatch.setattr(tui.ui.run, "Demo", FakeDemo)
    monkeypatch.setattr(tui.cli.demo, "qemu_available", lambda: None)
    assert main(["demo", "--write-interval", "0.05"]) == 2
    assert seen == [0.05, -1.0]  # built with the option, and closed after the failed start
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bitmap-tui: cannot start the demo QEMU: QEMU exited at start: boom"]
