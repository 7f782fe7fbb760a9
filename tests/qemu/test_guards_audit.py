"""Write-ahead audit on real QEMU: the intent is on disk before a command leaves, its outcome
after, linked by an id; when the intent cannot be written (a full file system) nothing is sent
and the user reads one line. File deletions of the ledger cleanup are audited the same way."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.common import requires_qemu
from tests.kit.txn import apply
from tui.core.base.audit import AuditLog, changes, read_entries
from tui.core.base.errors import AuditError
from tui.core.chains.cleanup import delete_images
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageState, JobState
from tui.core.txn import Transaction, dumps
from tui.core.txn.model import Action


@contextlib.contextmanager
def full_filesystem(where: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs at ``where`` holding an (empty) audit log, then filled to the last byte."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root: " + mounted.stderr.decode().strip())
    try:
        log = where / "audit.jsonl"
        log.touch()
        fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with contextlib.suppress(OSError):
                while os.write(fd, b"x" * 512):
                    pass
        finally:
            os.close(fd)
        yield log
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def bitmap_names(sb, node: str = "disk0") -> list[str]:
    nodes = await sb.qmp("query-named-block-nodes", {"flat": True})
    return [b["name"] for n in nodes if n["node-name"] == node
            for b in n.get("dirty-bitmaps", [])]


@requires_qemu
async def test_intent_is_on_disk_before_the_command_reaches_qemu(sandbox, fleet_for, tmp_path):
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    fleet = await fleet_for(sandbox, audit=audit)
    conn = fleet["vm0"]
    seen_before_send: list[list[dict]] = []
    client = conn._client
    real_execute = client.execute

    async def spy(cmd, args=None):
        if cmd == "block-dirty-bitmap-add":
            seen_before_send.append(read_entries(path))
        return await real_execute(cmd, args)

    client.execute = spy
    await conn.execute("block-dirty-bitmap-add", {"node": "disk0", "name": "wal"})
    (before,) = seen_before_send
    assert [(e["phase"], e["command"]) for e in before] == [("intent", "block-dirty-bitmap-add")]
    raw = read_entries(path)
    assert [e["phase"] for e in raw] == ["intent", "outcome"]
    assert raw[0]["id"] == raw[1]["id"] and raw[1]["reply"] == {}


@requires_qemu
async def test_full_audit_file_system_means_not_sent_on_the_connection(sandbox, fleet_for,
                                                                      tmp_path):
    with full_filesystem(tmp_path / "mnt") as log:
        audit = AuditLog(log)
        fleet = await fleet_for(sandbox, audit=audit)
        with pytest.raises(AuditError) as err:
            await fleet["vm0"].execute("block-dirty-bitmap-add", {"node": "disk0", "name": "b"})
        audit.close()
        assert "not sent" in str(err.value) and "No space left on device" in str(err.value)
        assert "\n" not in str(err.value)
        assert log.read_text() == ""
    assert await bitmap_names(sandbox) == [], "QEMU never received the command"


@requires_qemu
async def test_apply_with_a_full_audit_file_system_sends_nothing_and_says_so(make_sandbox,
                                                                            tmp_path):
    sb = await make_sandbox(drives=1)
    txn = tmp_path / "txn.yaml"
    txn.write_text(dumps(Transaction((
        Action("block-dirty-bitmap-add", {"node": "disk0", "name": "new"}),), "individual")))
    with full_filesystem(tmp_path / "mnt") as log:
        code, out, err = await apply(str(txn), "--connect", sb.address, "--audit-log", str(log))
    assert "Traceback" not in out + err
    assert code == 2
    text = out + err
    assert "not sent: transaction" in text and "No space left on device" in text
    assert await bitmap_names(sb) == []


async def test_outcome_lines_record_qemu_errors_timeouts_and_lost_connections(fake_qmp,
                                                                              fleet_for, tmp_path):
    srv = await fake_qmp()
    srv.hang_on.add("block-dirty-bitmap-add")
    path = tmp_path / "a.jsonl"
    fleet = await fleet_for(srv.address, audit=AuditLog(path), command_timeout=0.3)
    with contextlib.suppress(Exception):
        await fleet["vm0"].execute("block-dirty-bitmap-add", {"node": "n", "name": "b"})
    (entry,) = changes(path)
    assert entry["outcome"] and entry["error"] == "timeout"


def failed_image(led: Ledger, path: Path) -> int:
    """A sent transaction whose one (full) image failed: INVALID, so deletable."""
    txn = led.new_txn("vm", "p", "individual")
    iid = led.add_image(txn_id=txn, connection="vm", policy="p", drive="d0", node="n-d0",
                        bitmap="bm", path=str(path), kind="full", parent_id=None,
                        job_id=f"j{txn}", source_file=None, source_size=None)
    led.set_file_identity(iid, os.stat(path))  # the file this ledger created
    led.mark_sending(txn, [iid])
    led.mark_sent(txn)
    led.record_job("vm", f"j{txn}", JobState.FAILED, "boom")
    led.settle(txn)
    assert led.image(iid).state is ImageState.INVALID
    return iid


def test_cleanup_deletions_are_audited_write_ahead(tmp_path):
    image = tmp_path / "bad.qcow2"
    image.write_bytes(b"x")
    with Ledger(tmp_path / "ledger.db") as ledger:
        image_id = failed_image(ledger, image)
        audit = AuditLog(tmp_path / "audit.jsonl")
        result = delete_images(ledger, "vm", [image_id], audit=audit)
    assert result.deleted == [str(image)] and not image.exists()
    (entry,) = changes(tmp_path / "audit.jsonl")
    assert entry["command"] == "unlink" and entry["arguments"] == {"path": str(image)}
    assert entry["connection"] == "vm" and entry["outcome"] and entry["error"] is None


def test_cleanup_keeps_the_file_when_its_intent_cannot_be_written(tmp_path):
    image = tmp_path / "bad.qcow2"
    image.write_bytes(b"x")
    with full_filesystem(tmp_path / "mnt") as log, Ledger(tmp_path / "ledger.db") as ledger:
        image_id = failed_image(ledger, image)
        result = delete_images(ledger, "vm", [image_id], audit=AuditLog(log))
    assert image.exists() and not result.ok
    assert "not sent: unlink" in result.refused[0] and "No space left" in result.refused[0]


def test_os_write_failure_is_reported_not_raised_for_outcomes(tmp_path, monkeypatch):
    audit = AuditLog(tmp_path / "a.jsonl")
    entry = audit.intent("vm", "block-dirty-bitmap-add", {})

    def enospc(fd, data):
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(os, "write", enospc)
    assert audit.outcome(entry, reply={}) is False and audit.lost_outcomes == 1
    with pytest.raises(AuditError):
        audit.intent("vm", "block-dirty-bitmap-remove", {})
    monkeypatch.undo()
    audit.close()
