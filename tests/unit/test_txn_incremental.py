"""The defaults of "an incremental backup of these drives": bitmap, target names, skipped drives."""

from __future__ import annotations

from typing import Any

from tui.core.model.parse import clean_file
from tui.core.model.state import Bitmap, ConnectionModel, LinkState, Node
from tui.core.txn import prepare
from tui.core.txn.incremental import pick_bitmap, plan_incremental, planned_nodes


def bm(name: str, count: int = 4096, *, recording: bool = True, busy: bool = False,
       inconsistent: bool = False) -> Bitmap:
    return Bitmap(name, 65536, count, recording, busy, inconsistent)


def demo_like(**extra_nodes: Node) -> ConnectionModel:
    """The demo's drives: drive0 has nightly (active), paused (disabled), crashed (inconsistent);
    drive1 has bitmap0 (active) and in-backup (frozen)."""
    nodes = {
        "disk0": Node("disk0", "qcow2", "/vm/drive0.qcow2", 64 << 20, device="drive0",
                      bitmaps=(bm("crashed", inconsistent=True, recording=False), bm("nightly"),
                               bm("paused", 0, recording=False))),
        "disk1": Node("disk1", "qcow2", "/vm/drive1.qcow2", 64 << 20, device="drive1",
                      bitmaps=(bm("bitmap0"), bm("in-backup", busy=True))),
        "disk2": Node("disk2", "qcow2", "/vm/drive2.qcow2", 64 << 20, device="drive2"),
        **extra_nodes,
    }
    return ConnectionModel("vm0", "unix:/x", LinkState.CONNECTED, nodes=nodes)


def nothing_exists(_path: str) -> bool:
    return False


def test_the_one_active_bitmap_is_picked_not_the_last_listed() -> None:
    m = demo_like()
    assert pick_bitmap(m.nodes["disk0"])[0] == bm("nightly")
    assert pick_bitmap(m.nodes["disk1"])[0] == bm("bitmap0")  # not the frozen in-backup


def test_the_bitmap_under_the_cursor_wins_then_a_policys() -> None:
    node = demo_like().nodes["disk0"]
    assert pick_bitmap(node, selected="paused")[0] == bm("paused", 0, recording=False)
    two = Node("d", "qcow2", "/x", 1, bitmaps=(bm("a"), bm("b")))
    found, reason = pick_bitmap(two)
    assert found is None and reason.startswith("2 active bitmaps (a, b)")
    assert pick_bitmap(two, preferred=["b"])[0] == bm("b")


def test_drives_without_a_usable_bitmap_are_skipped_with_the_reason() -> None:
    m = demo_like(disk3=Node("disk3", "qcow2", "/vm/d3.qcow2", 1, device="drive3",
                             bitmaps=(bm("off", recording=False),)))
    plan = plan_incremental(m, ["drive0", "drive2", "drive3"], exists=nothing_exists)
    assert [a.data["device"] for a in plan.transaction.actions] == ["disk0"]
    assert [str(s) for s in plan.skipped] == [
        "drive2: skipped (no bitmap: add one (n) and take a full backup first)",
        "drive3: skipped (no active bitmap (off disabled))"]


def test_targets_are_blockdev_backups_next_to_the_image_numbered_without_collisions() -> None:
    existing = {"/vm/drive0-incr-1.qcow2", "/vm/drive0-incr-2.qcow2"}
    m = demo_like(old=Node("old", "qcow2", "/vm/drive1-incr-1.qcow2", 1))  # open in QEMU
    plan = plan_incremental(m, ["drive0", "drive1"], exists=existing.__contains__)
    assert plan.transaction.completion_mode == "grouped"
    assert [(t.device, t.path, t.node, t.size) for t in plan.targets] == [
        ("drive0", "/vm/drive0-incr-3.qcow2", "drive0-incr-3", 64 << 20),
        ("drive1", "/vm/drive1-incr-2.qcow2", "drive1-incr-2", 64 << 20)]
    assert [a.to_qmp() for a in plan.transaction.actions] == [
        {"type": "blockdev-backup", "data": {"device": "disk0", "job-id": "drive0-incr-3",
                                             "sync": "incremental", "bitmap": "nightly",
                                             "target": "drive0-incr-3"}},
        {"type": "blockdev-backup", "data": {"device": "disk1", "job-id": "drive1-incr-2",
                                             "sync": "incremental", "bitmap": "bitmap0",
                                             "target": "drive1-incr-2"}}]
    # the checks accept the targets that will be created, and find nothing else to say
    p = prepare(plan.transaction, m, planned=planned_nodes(plan.targets))
    assert p.ok and p.warnings == [] and p.notices == []


def test_one_pattern_for_several_drives_never_gives_one_name_twice() -> None:
    plan = plan_incremental(demo_like(), ["drive0", "drive1"], pattern="/b/incr-{n}.qcow2",
                            exists=nothing_exists)
    assert [t.path for t in plan.targets] == ["/b/incr-1.qcow2", "/b/incr-2.qcow2"]
    assert len({t.node for t in plan.targets}) == 2
    fixed = plan_incremental(demo_like(), ["drive0", "drive1"], pattern="/b/same.qcow2",
                             exists=nothing_exists)
    assert [t.path for t in fixed.targets] == ["/b/same.qcow2"]
    assert [s.drive for s in fixed.skipped] == ["drive1"]


def test_blkdebug_and_json_file_names_give_the_image_path(tmp_path: Any) -> None:
    assert clean_file("blkdebug:/etc/blk.conf:/vm/drive1.qcow2") == "/vm/drive1.qcow2"
    assert clean_file('json:{"driver": "qcow2", "file": {"image": {"driver": "file", '
                      '"filename": "/vm/drive1.qcow2"}}}') == "/vm/drive1.qcow2"
    blk = Node("disk1", "qcow2", clean_file("blkdebug:/c.conf:/vm/drive1.qcow2"), 1,
               device="drive1", bitmaps=(bm("b"),))
    m = ConnectionModel("vm0", "unix:/x", LinkState.CONNECTED, nodes={"disk1": blk})
    assert plan_incremental(m, ["drive1"], exists=nothing_exists).targets[0].path == \
        "/vm/drive1-incr-1.qcow2"


def test_a_drive_with_a_running_job_is_skipped_and_named() -> None:
    from dataclasses import replace

    from tui.core.model.state import Job

    m = replace(demo_like(), jobs={"demo-backup": Job("demo-backup", "backup", "running",
                                                      node="disk1")})
    plan = plan_incremental(m, ["drive0", "drive1"], exists=nothing_exists)
    assert [t.device for t in plan.targets] == ["drive0"]
    assert [str(s) for s in plan.skipped] == ["drive1: skipped (job demo-backup is running on it)"]


def test_the_frozen_bitmap_refusal_names_the_job() -> None:
    from tui.core.model.state import Job
    from tui.core.ops.bitmaps import check_action

    node = demo_like().nodes["disk1"]
    jobs = [Job("demo-backup", "backup", "running", node="disk1"),
            Job("other", "backup", "running", node="disk0")]
    refusal = check_action(node, "in-backup", "clear", jobs).refusal
    assert refusal is not None and "(in use by job demo-backup)" in refusal
    assert "(in use by a job)" in (check_action(node, "in-backup", "clear").refusal or "")


def test_targets_on_a_remote_qemu_are_flagged_unverified() -> None:
    from dataclasses import replace

    local = plan_incremental(demo_like(), ["drive0"], exists=nothing_exists)
    assert local.targets[0].warning() is None
    remote = plan_incremental(replace(demo_like(), address="tcp:db.example:4444"), ["drive0"],
                              exists=nothing_exists)
    warning = remote.targets[0].warning()
    assert warning is not None and "truncates" in warning and "/vm/drive0-incr-1.qcow2" in warning


def test_the_dashboard_prefers_the_configs_policy_bitmaps() -> None:
    from types import SimpleNamespace

    from tui.core.chains.policy import Policy
    from tui.core.model.store import Store
    from tui.session import ConsoleContext
    from tui.ui.operations import DashboardOperations

    two = Node("disk5", "qcow2", "/vm/d5.qcow2", 1, device="drive5",
               bitmaps=(bm("adhoc"), bm("bitmap-tui")))
    m = ConnectionModel("vm0", "unix:/x", LinkState.CONNECTED, nodes={"disk5": two})
    policies = {"nightly": Policy("nightly", "vm0", ("disk5",), bitmap="bitmap-tui"),
                "elsewhere": Policy("elsewhere", "vm1", ("disk5",), bitmap="adhoc")}
    context = ConsoleContext(store=Store(), policies=policies)
    ops = DashboardOperations(SimpleNamespace(context=context))
    preferred = ops.preferred_bitmaps(m)
    assert preferred == {"drive5": ["bitmap-tui"]}  # by device; the other VM's policy ignored
    plan = plan_incremental(m, ["drive5"], preferred=preferred, exists=nothing_exists)
    assert plan.transaction.actions[0].data["bitmap"] == "bitmap-tui"
    # without the policy, two active bitmaps: the drive is skipped, the operator must choose
    assert plan_incremental(m, ["drive5"], exists=nothing_exists).skipped[0].reason.startswith(
        "2 active bitmaps")
