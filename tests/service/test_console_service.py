"""The console and the commands through the service: two consoles open on one VM show the same
job live, and a headless status and backup of that VM succeed meanwhile."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import pytest

from tests.kit.common import requires_qemu
from tests.kit.service import EXE
from tests.kit.terminal import Tmux

pytestmark = [
    requires_qemu,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed"),
]


async def test_two_consoles_and_the_commands_share_a_vm(make_sandbox, serve, tmp_path):
    sb = await make_sandbox(drives=1)
    await sb.add_bitmap(0, "seen")
    policy = {"connection": "vm", "drives": ["drive0"], "target_dir": str(tmp_path / "backups")}
    (tmp_path / "backups").mkdir()
    served = await serve({"vm": sb.address}, extra={"policies": {"nightly": policy}}).start("vm")
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "none")}
    consoles = [Tmux(["env", *(f"{k}={v}" for k, v in env.items()), str(EXE), "--config",
                      str(served.config)]) for _ in range(2)]
    for console in consoles:
        console.start()
    try:
        for console in consoles:
            await console.wait_screen("connected", "via service", line=True)
            await console.wait_screen("seen", "active", line=True)
        run_env = {**os.environ, **env}
        for argv in (["status"], ["backup", "nightly"]):
            res = await asyncio.to_thread(
                subprocess.run, [str(EXE), *argv, "--config", str(served.config)],
                capture_output=True, text=True, env=run_env, timeout=120, check=False)
            assert res.returncode == 0, res.stdout + res.stderr
        # A slow job started by another client: both consoles show it running, live.
        await sb.qmp("blockdev-add", {"driver": "null-co", "node-name": "tgt", "size": 64 << 20})
        await sb.write(0, 0, "4M")
        await sb.qmp("blockdev-backup", {"job-id": "slowjob", "device": "disk0", "target": "tgt",
                                         "sync": "full", "speed": 4096})
        for console in consoles:
            await console.wait_screen("slowjob", "running", line=True)
        await sb.qmp("job-cancel", {"id": "slowjob"})
        for console in consoles:
            # the event log's line (the jobs table may have scrolled it below the policy's jobs)
            await console.wait_screen("BLOCK_JOB_CANCELLED", "slowjob", line=True)
    finally:
        for console in consoles:
            console.stop()
