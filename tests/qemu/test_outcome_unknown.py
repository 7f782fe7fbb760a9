"""A transaction whose reply is lost (the link drops after QEMU accepted it) is neither accepted
nor refused: ``apply`` says the outcome is unknown (exit 3, ``"accepted": null``), and follows
the jobs to their real results when the link comes back. A proxy in front of a real QEMU forwards
the ``transaction`` and drops the connection instead of its reply; the jobs really run."""

from __future__ import annotations

import asyncio
import json
import subprocess

import yaml

from tests.kit.chains import reference
from tests.kit.common import requires_qemu, wait_for
from tests.kit.qmp_recorder import RecordingProxy
from tests.kit.txn import apply
from tui.demo.sandbox import QEMU_IMG

pytestmark = requires_qemu


async def backup_file(sb, tmp_path, speed: int) -> str:
    """A full drive-backup of drive0 (64 MiB) at ``speed`` bytes/s, job id ``drive0``."""
    await sb.write(0, 0, "4M")
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"actions": [{"type": "drive-backup", "data": {
        "device": "drive0", "job-id": "drive0", "sync": "full", "format": "qcow2",
        "mode": "absolute-paths", "target": str(sb.path("full.qcow2")), "speed": speed}}]}))
    return str(path)


async def test_lost_reply_then_link_back_follows_the_real_jobs(make_sandbox, tmp_path):
    sb = await make_sandbox(drives=1)
    proxy = await RecordingProxy(tmp_path / "p.sock", sb.socket,
                                 drop_reply_to="transaction").start()
    try:
        txn = await backup_file(sb, tmp_path, speed=16 * 1024 * 1024)
        code, out, err = await apply(txn, "--connect", proxy.address, "--json")
    finally:
        await proxy.stop()
    assert proxy.dropped.is_set()
    data = json.loads(out)
    # The link came back (the proxy takes the reconnect) while the job ran: its real result.
    assert (code, data["accepted"], data["error"]) == (0, True, None), out + err
    assert [(j["job_id"], j["result"]) for j in data["jobs"]] == [("drive0", "completed")]
    assert proxy.commands.count("transaction") == 1, "the transaction is never sent twice"
    # The image QEMU wrote holds the disk (the VM is stopped: nothing changed it since).
    ref = await reference(sb, 0, "ref.qcow2")
    cmp = await asyncio.to_thread(subprocess.run, [QEMU_IMG, "compare", str(sb.path("full.qcow2")),
                                                   ref], capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


async def test_lost_reply_and_no_link_is_outcome_unknown(make_sandbox, tmp_path):
    sb = await make_sandbox(drives=1)
    proxy = await RecordingProxy(tmp_path / "p.sock", sb.socket,
                                 drop_reply_to="transaction").start()
    txn = await backup_file(sb, tmp_path, speed=1024 * 1024)
    task = asyncio.ensure_future(apply(txn, "--connect", proxy.address, "--json",
                                       "--wait-timeout", "2"))
    await wait_for(proxy.dropped.is_set, timeout=30, what="the dropped reply")
    await proxy.stop()  # the link does not come back
    (tmp_path / "p.sock").unlink()
    code, out, err = await task
    data = json.loads(out)
    assert code == 3, out + err
    assert data["accepted"] is None and "connection lost" in data["error"], data
    assert [(j["job_id"], j["result"]) for j in data["jobs"]] == [("drive0", "not known")]
    # Meanwhile QEMU runs the job the client could not see accepted.
    jobs = await sb.qmp("query-jobs")
    assert [j["id"] for j in jobs] == ["drive0"]


async def test_lost_reply_text_says_outcome_unknown_and_what_to_check(make_sandbox, tmp_path):
    sb = await make_sandbox(drives=1)
    proxy = await RecordingProxy(tmp_path / "p.sock", sb.socket,
                                 drop_reply_to="transaction").start()
    txn = await backup_file(sb, tmp_path, speed=1024 * 1024)
    task = asyncio.ensure_future(apply(txn, "--connect", proxy.address, "--wait-timeout", "2"))
    await wait_for(proxy.dropped.is_set, timeout=30, what="the dropped reply")
    await proxy.stop()
    (tmp_path / "p.sock").unlink()
    code, out, err = await task
    assert code == 3, out + err
    assert "OUTCOME UNKNOWN: " in out and "REFUSED" not in out
    assert "check its jobs by id (drive0) with query-jobs" in out
