"""A full disk under the ledger (a small tmpfs, mounted for the test: CI runs as root): the run
stops with one line naming the ledger file and a non-zero exit, records nothing as VALID that it
did not finish, and the next run, with room again, reconciles and goes on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess

import pytest

from tests.kit.chains import cli
from tests.kit.common import requires_qemu

pytestmark = requires_qemu

# Room to open the ledger and start the run (measured: the traceback came after the targets were
# created, mid-run), not to finish it.
LEAVE = 96 * 1024


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs in the test's directory."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"cannot mount a tmpfs (the test needs root): {done.stderr}"
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory, leave: int) -> None:
    """Write a filler file until the file system is full, then give ``leave`` bytes back: room
    to open the ledger (its shared-memory file), not for a whole run."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)


async def test_full_ledger_disk_is_one_line_and_the_next_run_reconciles(make_sandbox, setup,
                                                                        small_fs):
    sb = await make_sandbox(drives=2)
    cfg, env = setup(sb)
    ledger = small_fs / "ledger.sqlite"
    args = ["--connect", f"vm0={sb.address}", "--config", str(cfg), "--ledger", str(ledger)]
    first = await asyncio.to_thread(cli, ["backup", "nightly", *args], env)
    assert first.returncode == 0, first.stderr
    fill(small_fs, LEAVE)
    await sb.write(0, 0, "1M")
    full = await asyncio.to_thread(cli, ["backup", "nightly", *args], env)
    assert full.returncode != 0, full.stdout
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    lines = full.stderr.strip().splitlines()
    assert lines and f"ledger {ledger}: cannot write" in lines[-1], full.stderr
    (small_fs / "filler").unlink()
    chains = await asyncio.to_thread(cli, ["chains", "--json", *args], env)
    assert chains.returncode == 0, chains.stderr
    view = json.loads(chains.stdout)
    valid = [i for d in view["drives"] for i in d["chain"] if i["state"] == "valid"]
    assert len(valid) == 2, view  # the first run's two fulls; nothing of the failed run
    again = await asyncio.to_thread(cli, ["backup", "nightly", *args], env)
    assert again.returncode == 0, again.stderr
