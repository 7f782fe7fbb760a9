"""Pre-flight checks: every refusal, the resolution for sending, and the what-if rules."""

from __future__ import annotations

import pytest

from tests.kit.txn import bd, bm, incr, model
from tui.core.model.state import ConnectionModel, Job, LinkState, Node
from tui.core.txn import GROUPED, INDIVIDUAL, Action, Transaction, prepare, what_if
from tui.core.txn.checks import blockdev_equivalent
from tui.core.txn.verdict import decide


def errors(*actions: Action, mode: str = INDIVIDUAL, m: ConnectionModel | None = None,
           fill: bool = True) -> list[str]:
    p = prepare(Transaction(actions, mode), m or model(), fill_job_ids=fill)
    return [f.message for f in p.errors]


# Each case: the actions (and mode) and a phrase the one error must contain.
REFUSALS = [
    ("unknown node", [Action("block-dirty-bitmap-clear", {"node": "nope", "name": "x"})],
     INDIVIDUAL, "unknown node 'nope'"),
    ("unknown backup device", [incr(dev="drive9")], INDIVIDUAL, "unknown device or node 'drive9'"),
    ("unknown bitmap", [Action("block-dirty-bitmap-clear", {"node": "drive0", "name": "zzz"})],
     INDIVIDUAL, "unknown bitmap 'zzz' on disk0"),
    ("unknown backup bitmap", [incr(bitmap="zzz")], INDIVIDUAL, "unknown bitmap 'zzz' on disk0"),
    ("frozen bitmap", [Action("block-dirty-bitmap-clear", {"node": "disk0", "name": "hot"})],
     INDIVIDUAL, "frozen"),
    ("frozen backup bitmap", [incr(bitmap="hot")], INDIVIDUAL, "frozen"),
    ("inconsistent bitmap", [Action("block-dirty-bitmap-enable", {"node": "disk0", "name": "broken"})],
     INDIVIDUAL, "inconsistent"),
    ("inconsistent merge source", [Action("block-dirty-bitmap-merge",
                                          {"node": "disk0", "target": "bitmap0", "bitmaps": ["broken"]})],
     INDIVIDUAL, "inconsistent"),
    ("name exists", [Action("block-dirty-bitmap-add", {"node": "drive0", "name": "bitmap0"})],
     INDIVIDUAL, "already exists on disk0"),
    ("added twice", [Action("block-dirty-bitmap-add", {"node": "disk2", "name": "n"}),
                     Action("block-dirty-bitmap-add", {"node": "drive2", "name": "n"})],
     INDIVIDUAL, "already exists on disk2"),
    ("empty name", [Action("block-dirty-bitmap-add", {"node": "disk2", "name": ""})],
     INDIVIDUAL, "cannot be empty"),
    ("bad granularity", [Action("block-dirty-bitmap-add", {"node": "disk2", "name": "g",
                                                           "granularity": 1000})],
     INDIVIDUAL, "power of two"),
    ("persistent on raw", [Action("block-dirty-bitmap-add", {"node": "raw0", "name": "p",
                                                             "persistent": True})],
     INDIVIDUAL, "qcow2"),
    ("incremental without bitmap", [incr(bitmap=None)], INDIVIDUAL, "sync 'incremental' needs a bitmap"),
    ("bitmap sync without bitmap", [incr(bitmap=None, sync="bitmap")], INDIVIDUAL,
     "sync 'bitmap' needs a bitmap"),
    ("grouped with bitmap action", [incr(), Action("block-dirty-bitmap-clear",
                                                   {"node": "disk1", "name": "bitmap1"})],
     GROUPED, "cannot be part of a grouped transaction"),
    ("empty merge", [Action("block-dirty-bitmap-merge", {"node": "disk0", "target": "bitmap0",
                                                         "bitmaps": []})],
     INDIVIDUAL, "at least one source"),
    ("same target twice", [incr(target="/b/x.qcow2"), incr("drive1", "bitmap1", "/b/x.qcow2")],
     INDIVIDUAL, "writes the same target as action 1"),
    ("same target node twice", [bd("disk0", "tgt0", sync="full"), bd("disk1", "tgt0", sync="full")],
     INDIVIDUAL, "writes the same target as action 1"),
    ("incremental with bitmap-mode always", [incr(**{"bitmap-mode": "always"})], INDIVIDUAL,
     "only works with bitmap-mode 'on-success'"),
    ("bitmap without bitmap-mode", [incr(sync="bitmap")], INDIVIDUAL, "needs a bitmap-mode"),
    ("sync none with bitmap", [incr(sync="none", **{"bitmap-mode": "always"})], INDIVIDUAL,
     "sync 'none' does not produce"),
    ("full with never", [incr(sync="full", **{"bitmap-mode": "never"})], INDIVIDUAL,
     "'never' has no effect"),
    ("bitmap-mode without bitmap", [incr(bitmap=None, sync="full", **{"bitmap-mode": "always"})],
     INDIVIDUAL, "bitmap-mode given without a bitmap"),
    ("bad sync", [incr(sync="diff")], INDIVIDUAL, "sync must be one of"),
    ("negative speed", [incr(speed=-1)], INDIVIDUAL, "non-negative"),
    ("busy source", [bd("disk2", "tgt0", sync="full")], INDIVIDUAL, "disk2 is busy"),
    ("job id in use", [bd("disk0", "tgt0", sync="full", **{"job-id": "running"})], INDIVIDUAL,
     "job id 'running' is already in use"),
    ("job id twice", [bd("disk0", "tgt0", sync="full", **{"job-id": "j"}),
                      bd("disk1", "tgt1", sync="full", **{"job-id": "j"})], INDIVIDUAL,
     "job id 'j' is already in use"),
    ("unknown target node", [bd("disk0", "nowhere", sync="full")], INDIVIDUAL,
     "unknown target node 'nowhere'"),
    ("target is source", [bd("disk0", "disk0", sync="full")], INDIVIDUAL, "the source itself"),
    ("remove then use", [Action("block-dirty-bitmap-remove", {"node": "disk0", "name": "bitmap0"}),
                         incr()], INDIVIDUAL, "unknown bitmap 'bitmap0'"),
    # What earlier actions of the same transaction did (issue: the checks saw only live jobs).
    ("two backups of one drive by device name (QEMU 7.2 aborts)",
     [incr(), incr(bitmap=None, sync="full", target="/b/d0-full.qcow2")], INDIVIDUAL,
     "already backed up by action 1 of this transaction"),
    ("device then node of one drive", [incr(), bd("disk0", "tgt0", sync="full")], INDIVIDUAL,
     "abort QEMU 7.2"),
    ("one bitmap, two jobs", [bd("disk0", "tgt0", sync="bitmap", bitmap="bitmap0",
                                 **{"bitmap-mode": "always"}),
                              bd("disk0", "tgt1", sync="incremental", bitmap="bitmap0",
                                 **{"job-id": "j2"})],
     INDIVIDUAL, "used by the backup of action 1"),
    ("bitmap used by a backup, then cleared", [incr(), Action("block-dirty-bitmap-clear",
                                                              {"node": "disk0", "name": "bitmap0"})],
     INDIVIDUAL, "frozen until that job ends"),
    ("merge from a bitmap an earlier backup uses",
     [incr(), Action("block-dirty-bitmap-merge",
                     {"node": "disk1", "target": "bitmap1",
                      "bitmaps": [{"node": "disk0", "name": "bitmap0"}]})],
     INDIVIDUAL, "used by the backup of action 1"),
    ("target is an earlier source", [bd("disk1", "tgt0", sync="full"),
                                     bd("tgt0", "tgt1", sync="full")],
     INDIVIDUAL, "overwrites"),
    ("source is a later target", [bd("tgt0", "tgt1", sync="full"),
                                  bd("disk1", "tgt0", sync="full")],
     INDIVIDUAL, "the source action 1 backs up"),
    ("removed twice", [Action("block-dirty-bitmap-remove", {"node": "disk1", "name": "bitmap1"}),
                       Action("block-dirty-bitmap-remove", {"node": "disk1", "name": "bitmap1"})],
     INDIVIDUAL, "action 1 of this transaction removes it"),
]


@pytest.mark.parametrize("actions,mode,phrase", [c[1:] for c in REFUSALS],
                         ids=[c[0] for c in REFUSALS])
def test_each_refusal(actions: list[Action], mode: str, phrase: str) -> None:
    errs = errors(*actions, mode=mode)
    assert len(errs) == 1, errs
    assert phrase in errs[0]


def test_two_backups_of_one_drive_by_node_name_pass() -> None:
    """By node name QEMU 7.2 runs the pair; only the device-name form aborts it."""
    p = prepare(Transaction((bd("disk0", "tgt0", sync="full"),
                             bd("disk0", "tgt1", sync="incremental", bitmap="bitmap0",
                                **{"job-id": "j2"}))), model())
    assert p.ok, p.errors


def test_remove_then_add_then_use_passes() -> None:
    p = prepare(Transaction((
        Action("block-dirty-bitmap-remove", {"node": "disk0", "name": "bitmap0"}),
        Action("block-dirty-bitmap-add", {"node": "disk0", "name": "bitmap0"}),
        incr(),
    )), model())
    assert p.ok, p.errors


def test_clear_then_full_backup_passes() -> None:
    """iotest 124's transaction: clear both bitmaps, then a full backup of the drive."""
    p = prepare(Transaction((
        Action("block-dirty-bitmap-clear", {"node": "disk0", "name": "bitmap0"}),
        incr(bitmap=None, sync="full"),
    )), model())
    assert p.ok, p.errors


def test_running_blockdev_create_refuses_the_transaction() -> None:
    jobs = {"mk": Job("mk", "create", "running")}
    errs = errors(incr(), m=model(jobs=jobs))
    assert len(errs) == 1 and "blockdev-create job mk is running" in errs[0]


def test_node_source_without_job_id_is_refused_when_not_filled_in() -> None:
    a = Action("blockdev-backup", {"device": "disk0", "target": "tgt0", "sync": "full"})
    assert errors(a, fill=False) == ["a backup of node 'disk0' needs a job-id (QEMU: Invalid job ID '')"]
    p = prepare(Transaction((a,)), model())
    assert p.ok and p.transaction.actions[0].job_id == "disk0-backup"


def test_not_connected_and_empty_refused() -> None:
    assert any("not connected" in e for e in errors(incr(), m=model(state=LinkState.DISCONNECTED)))
    assert errors() == ["the transaction has no actions"]


def test_valid_documentation_example_resolves_cleanly() -> None:
    txn = Transaction((incr(), incr("drive1", "bitmap1", "/b/d1.qcow2")))
    p = prepare(txn, model())
    assert p.ok
    # job-id filled with the device name (QEMU's own default, the doc's event "device")
    assert [a.job_id for a in p.transaction.actions] == ["drive0", "drive1"]
    # drive-backup: a notice (not a warning: no confirmation) with the blockdev-backup equivalent
    assert p.warnings == [] and [n.level for n in p.notices] == ["notice", "notice"]
    fix = p.notices[0].fix
    assert fix is not None and fix.type == "blockdev-backup" and fix.data["target"] == "d0"
    assert "format" not in fix.data and "mode" not in fix.data and fix.data["bitmap"] == "bitmap0"
    assert p.notices[0].fix_prepare[0][1]["file"]["filename"] == "/b/d0.qcow2"
    # apply prints it as one line with the commands to use instead
    from tui.cli.apply import notice_line
    line = notice_line(p.notices[0])
    assert "\n" not in line and line.startswith("notice: action 1: drive-backup is deprecated")
    assert '"execute": "blockdev-add"' in line and '"type": "blockdev-backup"' in line
    # individual mode sends no properties: byte-for-byte the documentation's arguments
    assert "properties" not in p.transaction.to_qmp()
    assert p.transaction.with_mode(GROUPED).to_qmp()["properties"] == {"completion-mode": "grouped"}


def test_bitmaps_addressed_by_node_name() -> None:
    txn = Transaction((
        Action("block-dirty-bitmap-add", {"node": "drive2", "name": "ck", "disabled": True}),
        Action("block-dirty-bitmap-merge", {"node": "drive0", "target": "bitmap0",
                                            "bitmaps": [{"node": "drive1", "name": "bitmap1"}]}),
        Action("block-dirty-bitmap-merge", {"node": "drive2", "target": "ck",
                                            "bitmaps": [{"node": "drive2", "name": "ck"}]}),
    ))
    p = prepare(txn, model())
    assert p.ok, p.errors
    sent = p.transaction.to_qmp()["actions"]
    assert sent[0]["data"]["node"] == "disk2"
    assert sent[1]["data"] == {"node": "disk0", "target": "bitmap0",
                               "bitmaps": [{"node": "disk1", "name": "bitmap1"}]}


def test_blockdev_equivalent_names_a_node() -> None:
    fix, prep = blockdev_equivalent(incr(target="/b/2024 incr.qcow2"))
    assert fix.data["target"] == "t-2024-incr" or fix.data["target"].startswith("t-")
    assert prep[0][0] == "blockdev-add"


def test_what_if_individual_and_grouped() -> None:
    m = model()
    txn = prepare(Transaction((incr(), incr("drive1", "bitmap1", "/b/d1.qcow2"))), m).transaction
    ind = what_if(txn, m)
    assert [s.title for s in ind] == ["every job completes", "drive0's job (drive0) fails",
                                      "drive1's job (drive1) fails"]
    v = ind[2].verdict
    assert [i.verdict for i in v.images] == ["valid", "invalid"]
    assert [b.outcome for b in v.bitmaps] == ["cleared", "restored"]
    assert "drive0's next incremental must be based on /b/d0.qcow2" in v.next
    grp = what_if(txn.with_mode(GROUPED), m)
    v = grp[2].verdict
    assert [j.result for j in v.jobs] == ["cancelled", "failed"]
    assert [i.verdict for i in v.images] == ["invalid", "invalid"]
    assert [b.outcome for b in v.bitmaps] == ["restored", "restored"]


def test_bitmap_mode_always_and_never() -> None:
    m = model()
    txn = Transaction((
        incr(sync="bitmap", **{"bitmap-mode": "always", "job-id": "a"}),
        incr("drive1", "bitmap1", "/b/d1", sync="bitmap", **{"bitmap-mode": "never", "job-id": "n"}),
    ), GROUPED)
    v = decide(txn, m, {"a": ("cancelled", None), "n": ("failed", "Input/output error")})
    out = {b.name: (b.outcome, b.partial) for b in v.bitmaps}
    # always, cancelled part-way (how far it got is unknown here): what was not copied stays
    assert out == {"bitmap0": ("partly synced", True), "bitmap1": ("unchanged", False)}
    assert [i.verdict for i in v.images] == ["incomplete", "invalid"]
    assert any(n.startswith("do not re-run the same transaction") for n in v.next)
    assert not any(n.endswith("re-run the same transaction") for n in v.next)


def test_failed_anchor_full_backup_is_explained() -> None:
    m = model()
    txn = Transaction((
        Action("block-dirty-bitmap-clear", {"node": "disk0", "name": "bitmap0"}),
        incr(bitmap=None, sync="full", **{"job-id": "f0"}),
    ))
    v = decide(txn, m, {"f0": ("failed", "Input/output error")})
    assert [(b.name, b.outcome) for b in v.bitmaps] == [("bitmap0", "cleared")]
    assert any("counts from an image that does not exist" in n for n in v.next)
    assert v.to_dict()["jobs"][0]["result"] == "failed"


def test_auto_finalize_false_is_a_warning() -> None:
    p = prepare(Transaction((bd("disk0", "tgt0", sync="full", **{"auto-finalize": False}),)),
                model())
    assert p.ok and [w.message.split(":")[0] for w in p.warnings] == ["auto-finalize false"]


def test_disabled_or_empty_source_bitmap_is_a_warning() -> None:
    m = model()
    disk1 = m.nodes["disk1"]
    nodes = dict(m.nodes)
    nodes["disk1"] = Node("disk1", "qcow2", disk1.file, disk1.size, device="drive1",
                          bitmaps=(bm("off", 4096, recording=False), bm("empty", 0)))
    m2 = model(nodes=nodes)
    for name, word in (("off", "is disabled"), ("empty", "is empty")):
        p = prepare(Transaction((bd("drive1", "tgt0", sync="incremental", bitmap=name),)), m2)
        assert p.ok and [w.message.split(": ")[0] for w in p.warnings] == [
            f"bitmap '{name}' on disk1 {word}"]
    # a recording bitmap with changes: nothing to warn about
    p = prepare(Transaction((bd("drive1", "tgt0", sync="incremental", bitmap="bitmap1"),)), m)
    assert p.warnings == []


def test_planned_target_nodes_are_accepted() -> None:
    a = bd("drive1", "new-target", sync="incremental", bitmap="bitmap1")
    assert any("unknown target node" in e for e in errors(a))
    p = prepare(Transaction((a,)), model(), planned=frozenset({"new-target"}))
    assert p.ok and not any("target" in f.message for f in p.findings)
