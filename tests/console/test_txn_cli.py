"""``bitmap-tui apply`` end to end (the installed console script) against a real QEMU."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

from tests.kit.common import SAMPLES, requires_qemu
from tests.kit.txn import EXE, apply
from tui.core.base.audit import changes
from tui.core.txn import Transaction, dumps, load
from tui.core.txn.model import Action
from tui.demo.sandbox import QEMU_IMG, Sandbox, run

KEYS = {"completion_mode", "accepted", "error", "jobs", "images", "bitmaps", "next"}


def doc_example(sb: Sandbox, tmp: Path) -> Path:
    txn = load(SAMPLES / "txn-incremental-individual.yaml")
    acts = [a.with_data(target=str(sb.path(a.data["target"]))) for a in txn.actions]
    path = tmp / "txn.yaml"
    path.write_text(dumps(Transaction(tuple(acts), txn.completion_mode)))
    return path


@requires_qemu
async def test_apply_exit_1_partial_failure_json(make_sandbox, tmp_path):
    sb = await make_sandbox(drives=2, failing=[1])
    for d in (0, 1):
        await sb.add_bitmap(d, f"bitmap{d}")
        await sb.write(d, 0, "1M")
        run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(sb.path(f"d{d}-incr-1.qcow2")), "64M"])
    await sb.arm_read_error(1)
    path = doc_example(sb, tmp_path)
    # drive-backup is deprecated: sent without --yes, with a notice (not a warning) in checks
    code, out, _ = await apply(str(path), "--connect", sb.address, "--json")
    data = json.loads(out)
    assert any(c.startswith("notice: action 1: drive-backup is deprecated") for c in data["checks"])
    assert not any(c.startswith("warning") for c in data["checks"])
    assert code == 1, out
    assert KEYS <= set(data) and data["accepted"] is True and data["error"] is None
    assert data["completion_mode"] == "individual"
    jobs = {j["job_id"]: j for j in data["jobs"]}
    assert set(jobs["drive0"]) >= {"job_id", "device", "node", "target", "result", "error"}
    assert (jobs["drive0"]["result"], jobs["drive0"]["device"], jobs["drive0"]["node"]) == (
        "completed", "drive0", "disk0")
    assert jobs["drive1"]["result"] == "failed" and jobs["drive1"]["error"] == "Input/output error"
    assert [(Path(i["path"]).name, i["verdict"]) for i in data["images"]] == [
        ("d0-incr-1.qcow2", "valid"), ("d1-incr-1.qcow2", "invalid")]
    assert [(b["node"], b["name"], b["outcome"]) for b in data["bitmaps"]] == [
        ("disk0", "bitmap0", "cleared"), ("disk1", "bitmap1", "restored")]
    assert any("drive0's next incremental must be based on" in n for n in data["next"])
    # every command that changed QEMU is in the audit log (the refused run sent nothing)
    audit = Path(os.environ["XDG_STATE_HOME"]) / "bitmap-tui" / "audit.jsonl"
    assert [e["command"] for e in changes(audit)] == ["transaction"]


@requires_qemu
async def test_apply_exit_0_text_and_json(make_sandbox, tmp_path):
    sb = await make_sandbox(drives=1)
    await sb.add_bitmap(0, "bitmap0")
    await sb.write(0, 0, "1M")
    img = sb.path("t0.qcow2")
    run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(img), "64M"])
    await sb.qmp("blockdev-add", {"driver": "qcow2", "node-name": "t0",
                                  "file": {"driver": "file", "filename": str(img)}})
    path = tmp_path / "t.yaml"
    path.write_text(dumps(Transaction((Action("blockdev-backup", {
        "device": "drive0", "sync": "incremental", "bitmap": "bitmap0", "target": "t0"}),))))
    code, out, err = await apply(str(path), "--connect", sb.address, "--completion-mode", "grouped")
    assert code == 0, out + err
    assert "job drive0 (drive0) COMPLETED" in out
    assert f"image {img}: VALID (keep)" in out
    assert "bitmap disk0/bitmap0: cleared, dirty 1 MiB → 0 B" in out
    # the same again with --json: an empty incremental, still exit 0
    await sb.write(0, "4M", "64k")
    code, out, _ = await apply(str(path), "--connect", sb.address, "--json")
    data = json.loads(out)
    assert code == 0 and KEYS <= set(data) and data["accepted"] and data["error"] is None
    assert data["completion_mode"] == "individual"
    assert data["jobs"] == [{"job_id": "drive0", "device": "drive0", "node": "disk0",
                             "target": "t0", "result": "completed", "error": None}]
    assert data["images"] == [{"path": str(img), "verdict": "valid"}]
    assert [(b["node"], b["name"], b["outcome"], b["count_before"], b["count_after"])
            for b in data["bitmaps"]] == [("disk0", "bitmap0", "cleared", 65536, 0)]


@requires_qemu
async def test_apply_exit_2_refusals(make_sandbox, tmp_path):
    sb = await make_sandbox(drives=2)
    await sb.add_bitmap(0, "bitmap0")
    # a pre-flight error: bitmap action in grouped mode
    path = tmp_path / "g.yaml"
    path.write_text(dumps(Transaction((
        Action("block-dirty-bitmap-clear", {"node": "drive0", "name": "bitmap0"}),), "grouped")))
    code, out, _ = await apply(str(path), "--connect", sb.address, "--json")
    data = json.loads(out)
    assert code == 2 and not data["accepted"] and "grouped" in data["error"]
    # a QMP error (QEMU refuses in prepare: the existing target is missing)
    path.write_text(dumps(Transaction((
        Action("block-dirty-bitmap-add", {"node": "drive0", "name": "new"}),
        Action("drive-backup", {"device": "drive0", "job-id": "j", "sync": "full",
                                "mode": "existing", "format": "qcow2",
                                "target": str(sb.path("missing.qcow2"))})))))
    code, out, _ = await apply(str(path), "--connect", sb.address, "--json", "--yes")
    data = json.loads(out)
    assert code == 2 and data["accepted"] is False
    assert data["error"].startswith("QEMU refused the transaction: Could not open")
    # prepare is atomic: the bitmap added by action 1 was rolled back
    names = [b.get("name") for n in await sb.qmp("query-named-block-nodes")
             for b in n.get("dirty-bitmaps", []) if n["node-name"] == "disk0"]
    assert "new" not in names
    # a warning that risks data (a disabled source bitmap) still needs --yes
    await sb.add_bitmap(1, "off", disabled=True)
    path.write_text(dumps(Transaction((Action("drive-backup", {
        "device": "drive1", "sync": "incremental", "bitmap": "off", "mode": "existing",
        "format": "qcow2", "target": str(sb.path("never.qcow2"))}),))))
    code, out, _ = await apply(str(path), "--connect", sb.address, "--json")
    data = json.loads(out)
    assert code == 2 and "--yes" in data["error"] and "is disabled" in data["error"]
    # a bad file: one line naming file, line and key
    bad = tmp_path / "bad.yaml"
    bad.write_text("actions:\n  - type: drive-backup\n    data:\n      device: drive0\n"
                   "      sync: full\n      target: /x\n      speeed: 5\n")
    code, out, _ = await apply(str(bad), "--connect", sb.address)
    assert code == 2
    assert out.strip() == f"REFUSED: {bad}:7: actions[0].data.speeed: unknown key for drive-backup"
    # no QEMU there
    code, out, _ = await apply(str(path), "--connect", str(tmp_path / "none.sock"), "--json")
    assert code == 2 and "no such socket" in json.loads(out)["error"]


@requires_qemu
async def test_compose_in_a_real_terminal(make_sandbox, tmp_path):
    """The installed ``bitmap-tui compose`` in tmux at 80x24: shows the file, toggles, goes
    back to the dashboard, quits."""
    tmux = shutil.which("tmux")
    assert tmux, "tmux is needed (./dev installs it)"
    sb = await make_sandbox(drives=2)
    for d in (0, 1):
        await sb.add_bitmap(d, f"bitmap{d}")
    session = f"compose-{tmp_path.name}"
    base = [tmux, "-L", session]  # a private tmux server: nothing shared with the user's

    async def tmux_do(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(*base, *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return out.decode()

    async def screen_shows(needle: str) -> str:
        # generous: a loaded 2-core CI machine can take many seconds to start the app
        for _ in range(1200):
            text = await tmux_do("capture-pane", "-p", "-t", session)
            if needle in text:
                return text
            await asyncio.sleep(0.05)
        raise AssertionError(f"{needle!r} never shown:\n{text}")

    await tmux_do("new-session", "-d", "-s", session, "-x", "80", "-y", "24", EXE, "compose",
                  str(SAMPLES / "txn-incremental-individual.yaml"), "--connect", sb.address)
    try:
        text = await screen_shows("2 action(s)")
        assert "drive-backup drive0" in text and "completion-mode: individual" in text
        await tmux_do("send-keys", "-t", session, "m")
        await screen_shows("completion-mode: grouped")
        await tmux_do("send-keys", "-t", session, "4")
        await screen_shows("completion-mode grouped: what each outcome")
        await tmux_do("send-keys", "-t", session, "Escape")  # unsent changes: it asks first
        await screen_shows("Leave the composer?")
        await tmux_do("send-keys", "-t", session, "y")  # back to the dashboard (draft kept)
        await screen_shows("Nodes and bitmaps")
        await tmux_do("send-keys", "-t", session, "q")  # the draft would be lost: it asks
        await screen_shows("Quit?")
        await tmux_do("send-keys", "-t", session, "y")
        for _ in range(200):
            if "compose" not in await tmux_do("list-sessions"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the console did not quit on q")
    finally:
        await tmux_do("kill-server")
