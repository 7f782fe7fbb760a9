"""Chain trust rules without QEMU: owners, breaks, INCOMPLETE images, adoption, names we issue."""

from __future__ import annotations

import sqlite3

import pytest

from tests.kit.common import make_policy
from tui.core.base.errors import ConfigError
from tui.core.chains.cleanup import deletable_images
from tui.core.chains.owners import break_warning, chain_of, owner_of, record_console_break
from tui.core.chains.plan import chain_state, make_plan
from tui.core.chains.watch import live_breaks, observe_bitmap, record_breaks
from tui.core.ledger.names import companion_bitmaps, with_companions
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageState, JobState
from tui.core.model.owners import KNOWN_TOOLS, owned_ledger, owner_label, short_name
from tui.core.model.serialize import bitmap_dict
from tui.core.model.state import Bitmap, ConnectionModel, LinkState, Node


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    yield led
    led.close()


def image(led, kind, outcome, parent=None, drive="drive0", mode="on-success", released=True):
    txn = led.new_txn("vm", "nightly", "individual")
    bitmap = led.image(parent).bitmap if parent else led.chain_bitmap("nightly", txn)
    iid = led.add_image(txn_id=txn, connection="vm", policy="nightly", drive=drive, node="disk0",
                        bitmap=bitmap, path=f"/b/{drive}-{txn}.qcow2", kind=kind, parent_id=parent,
                        job_id=led.job_id(txn, 0), source_file="/d/disk0.qcow2",
                        source_size=64 << 20, bitmap_mode=mode)
    led.mark_sending(txn, [iid] if kind == "full" else [])
    led.mark_sent(txn)
    led.record_job("vm", led.job_id(txn, 0), outcome, None if outcome is JobState.COMPLETED else "EIO")
    if released:
        led.mark_released(iid)
    led.settle(txn)
    return iid


def model(bitmaps=(), node="disk0"):
    n = Node(node, "qcow2", "/d/disk0.qcow2", 64 << 20, device="drive0", bitmaps=tuple(bitmaps))
    return ConnectionModel("vm", "unix:/run/vm.qmp", LinkState.CONNECTED, nodes={node: n}, synced=True)


def bm(name, count=0, granularity=65536, recording=True, persistent=False):
    return Bitmap(name, granularity, count, recording, False, persistent=persistent)


POLICY = make_policy("nightly", {"connection": "vm", "drives": ["drive0"], "target_dir": "/b"})


# ------------------------------------------------------------------ names and owners


def test_names_carry_the_ledger_id(ledger, tmp_path):
    lid = ledger.ledger_id
    assert len(lid) == 8 and int(lid, 16) >= 0
    assert ledger.job_id(3, 1) == f"bt.{lid}.3.1"
    assert ledger.node_name(3, 1) == f"bt.{lid}.3n1" and len(ledger.node_name(10**9, 9) + "-cf") < 32
    assert ledger.chain_bitmap("nightly", 7) == f"bt.{lid}.nightly.c7"
    assert ledger.issued(ledger.job_id(1, 0)) and not ledger.issued("bt1-0")
    # The id is stored: the same file keeps it, another ledger has its own.
    with Ledger(ledger.path) as again:
        assert again.ledger_id == lid
    with Ledger(tmp_path / "other.sqlite") as other:
        assert other.ledger_id != lid


def test_companions_are_ours_and_never_a_chain_bitmap(ledger):
    chain = ledger.chain_bitmap("nightly", 7)
    sentinel, canary = companion_bitmaps(chain)
    lid = ledger.ledger_id
    assert (sentinel, canary) == (f"bt.{lid}.nightly~sentinel.c7", f"bt.{lid}.nightly~size.c7")
    assert all(ledger.issued(n) and owner_label(n, lid) == "this ledger" for n in (sentinel, canary))
    assert with_companions({chain}) == {chain, sentinel, canary}
    # "~" is refused in a policy name: no policy's chain bitmap is ever named like a companion.
    with pytest.raises(ConfigError):
        make_policy("nightly~sentinel", {"connection": "vm", "drives": ["d"], "target_dir": "/b"})


@pytest.mark.parametrize("name,owner", [
    ("pbs-incremental-dirty-bitmap", "Proxmox Backup Server"),
    ("virtnbdbackup.0", "virtnbdbackup"), ("virtnbdbackup.17", "virtnbdbackup"),
    ("qmpbackup-disk0-3f2b7c1e-9a4d-4e2b-8c11-0a1b2c3d4e5f", "qmpbackup"),
    ("VeeamTmp_a1b2", "Veeam"), ("1700000000", "libvirt checkpoint"),
    ("backup-vda", "libvirt"), ("bt.0badc0de.nightly.c3", "bitmap-tui ledger 0badc0de"),
    ("bitmap0", "unknown"), ("virtnbdbackup.x", "unknown"), ("pbs-incremental", "unknown"),
])
def test_owner_by_name(name, owner):
    assert owner_label(name) == owner
    assert bitmap_dict(bm(name))["owner"] == owner


def test_owner_table_is_data_and_ours_is_recognised(ledger):
    assert {t.label for t in KNOWN_TOOLS} >= {"Proxmox Backup Server", "virtnbdbackup", "qmpbackup",
                                              "Veeam", "libvirt checkpoint"}
    mine = ledger.chain_bitmap("nightly", 1)
    assert owned_ledger(mine) == ledger.ledger_id
    assert owner_label(mine, ledger.ledger_id) == "this ledger"
    assert owner_label(None) is None and bitmap_dict(bm(None))["owner"] is None
    full = image(ledger, "full", JobState.COMPLETED)
    assert owner_of(ledger, "vm", "disk0", ledger.image(full).bitmap) == "policy nightly (drive0)"
    assert owner_of(ledger, "vm", "disk0", "pbs-incremental-dirty-bitmap") == "Proxmox Backup Server"


def test_console_names_the_chain_and_records_the_break(ledger):
    full = image(ledger, "full", JobState.COMPLETED)
    name = ledger.image(full).bitmap
    ref = chain_of(ledger, "vm", "disk0", name)
    assert ref is not None and ref.warning() == \
        "policy nightly's chain for drive0 will need a new full backup"
    for action in ("clear", "remove", "disable", "merge"):
        assert break_warning("vm", "disk0", name, action, ledger) == ref.warning()
    assert break_warning("vm", "disk0", name, "enable", ledger) is None
    assert break_warning("vm", "disk0", "other", "clear", ledger) is None
    assert not record_console_break("vm", "disk0", name, "enable", ledger)
    assert record_console_break("vm", "disk0", name, "merge", ledger)
    assert [b.reason for b in ledger.breaks("vm")] == [f"bitmap '{name}' was merged into in the console"]
    cs = chain_state(ledger, "vm", "drive0")
    assert cs.base is None and "merged into in the console" in cs.reason
    # The chain is broken: its bitmap is no longer a current chain's (nothing more to warn).
    assert break_warning("vm", "disk0", name, "clear", ledger) is None


def test_console_without_a_ledger_warns_nothing_and_creates_none(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert break_warning("vm", "disk0", "bt.00000000.p.c1", "clear") is None
    assert not record_console_break("vm", "disk0", "bt.00000000.p.c1", "clear")
    assert not (tmp_path / "state").exists()


# ------------------------------------------------------------------ breaks seen at plan time


def test_live_breaks_against_the_last_observation(ledger):
    full = image(ledger, "full", JobState.COMPLETED)
    name = ledger.image(full).bitmap
    node = model([bm(name, count=4 << 20)]).nodes["disk0"]
    assert live_breaks(ledger, "vm", node, name) == []  # never observed: nothing to compare
    observe_bitmap(ledger, "vm", node, name)

    def seen(b):
        return live_breaks(ledger, "vm", model([b]).nodes["disk0"], name)

    assert seen(bm(name, count=5 << 20)) == []  # more writes
    assert "count dropped from 4194304 to 65536" in seen(bm(name, count=65536))[0]
    assert "changed granularity (65536 → 4096" in seen(bm(name, count=5 << 20, granularity=4096))[0]
    assert "changed persistence" in seen(bm(name, count=5 << 20, persistent=True))[0]
    assert "disabled" in seen(bm(name, count=5 << 20, recording=False))[0]
    assert "vanished" in live_breaks(ledger, "vm", model().nodes["disk0"], name)[0]
    # Seen missing once, then back: re-created.
    observe_bitmap(ledger, "vm", model().nodes["disk0"], name)
    assert "vanished and reappeared" in seen(bm(name))[0]


def test_a_count_drop_after_our_own_backup_is_not_a_break(ledger):
    full = image(ledger, "full", JobState.COMPLETED)
    name = ledger.image(full).bitmap
    observe_bitmap(ledger, "vm", model([bm(name, count=4 << 20)]).nodes["disk0"], name)
    image(ledger, "incremental", JobState.COMPLETED, parent=full)  # it cleared what it copied
    assert live_breaks(ledger, "vm", model([bm(name, count=0)]).nodes["disk0"], name) == []


def test_a_recorded_break_makes_the_next_run_a_full_with_the_reason(ledger):
    full = image(ledger, "full", JobState.COMPLETED)
    name = ledger.image(full).bitmap
    conn = model([bm(name, count=4 << 20)])
    observe_bitmap(ledger, "vm", conn.nodes["disk0"], name)
    assert make_plan(ledger, conn, POLICY).drives[0].kind == "incremental"
    dropped = model([bm(name, count=1 << 16)])
    plan = make_plan(ledger, dropped, POLICY)
    assert plan.drives[0].kind == "full" and "count dropped" in plan.drives[0].reason
    assert ledger.breaks("vm") == []  # the plan itself is pure...
    record_breaks(ledger, "vm", dropped.nodes["disk0"], name)  # ...the run records it
    [brk] = ledger.breaks("vm")
    assert "count dropped" in brk.reason
    # Recorded: even a bitmap that looks fine again does not bring the chain back.
    plan = make_plan(ledger, model([bm(name, count=8 << 20)]), POLICY)
    assert plan.drives[0].kind == "full" and "chain broken" in plan.drives[0].reason
    new = plan.drives[0].bitmap
    assert new == ledger.chain_bitmap("nightly", plan.txn_id) and new != name
    # The new chain's bitmap and its sentinel, started together (the same settings).
    sentinel, _canary = companion_bitmaps(new)
    assert plan.drives[0].bitmap_actions == (
        {"type": "block-dirty-bitmap-add", "data": {"node": "disk0", "name": new}},
        {"type": "block-dirty-bitmap-add", "data": {"node": "disk0", "name": sentinel}})


def test_a_chain_on_a_name_we_did_not_issue_is_adopted_with_a_full(ledger):
    txn = ledger.new_txn("vm", "nightly", "individual")
    old = ledger.add_image(txn_id=txn, connection="vm", policy="nightly", drive="drive0",
                           node="disk0", bitmap="bitmap-tui", path="/b/old.qcow2", kind="full",
                           parent_id=None, job_id="bt1-0", source_file="/d/disk0.qcow2",
                           source_size=64 << 20)
    ledger.mark_sending(txn, [old])
    ledger.mark_sent(txn)
    ledger.record_job("vm", "bt1-0", JobState.COMPLETED)
    ledger.mark_released(old)
    ledger.settle(txn)
    plan = make_plan(ledger, model([bm("bitmap-tui")]), POLICY)
    d = plan.drives[0]
    assert d.kind == "full" and "adopting: bitmap 'bitmap-tui' is not owned" in d.reason
    assert d.bitmap.startswith(ledger.prefix) and d.error is None


def test_a_taken_fresh_name_is_refused(ledger):
    plan = make_plan(ledger, model([bm(ledger.chain_bitmap("nightly", 1))]), POLICY)
    assert "already exists on disk0, but this ledger never made it" in plan.errors[0]


def test_full_every_and_verify_options():
    pol = make_policy("p", {"connection": "vm", "drives": ["d"], "target_dir": "/b",
                                 "verify": "after", "full_every": 3})
    assert pol.verify == "after" and pol.full_every == 3
    assert make_policy("p", {"connection": "vm", "drives": ["d"], "target_dir": "/b"}).verify == "never"
    for bad, msg in (({"verify": "always"}, "policies.p.verify"),
                     ({"full_every": 0}, "policies.p: .full_every. must be a positive"),
                     ({"full_every": True}, "policies.p: .full_every. must be a positive")):
        with pytest.raises(ConfigError, match=msg):
            make_policy("p", {"connection": "vm", "drives": ["d"], "target_dir": "/b", **bad})


def test_config_file_takes_verify_and_full_every_and_needs_no_bitmap(tmp_path):
    from tui.core.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("connections: {vm: unix:/run/vm.qmp}\npolicies:\n"
                   "  p: {connection: vm, drives: [drive0], target_dir: /b, verify: after,"
                   " full_every: 7}\n")
    pol = load_config(str(cfg)).policies["p"]
    assert pol.verify == "after" and pol.full_every == 7
    cfg.write_text("connections: {vm: unix:/run/vm.qmp}\npolicies:\n"
                   "  p: {connection: vm, drives: [drive0], target_dir: /b, verify: sometimes}\n")
    with pytest.raises(ConfigError, match="verify"):
        load_config(str(cfg))


# ------------------------------------------------------------------ released, INCOMPLETE


def test_a_completed_job_counts_only_once_its_target_is_released(ledger):
    iid = image(ledger, "full", JobState.COMPLETED, released=False)
    assert ledger.image(iid).state is ImageState.PENDING
    assert chain_state(ledger, "vm", "drive0").busy.id == iid
    ledger.mark_released(iid)
    ledger.settle(ledger.image(iid).txn_id)
    assert ledger.image(iid).state is ImageState.VALID


def test_incomplete_image_is_a_base_but_never_a_restore_point(ledger):
    assert ImageState.INCOMPLETE == "incomplete"
    full = image(ledger, "full", JobState.COMPLETED)
    part = image(ledger, "incremental", JobState.FAILED, parent=full, mode="always")
    assert ledger.image(part).state is ImageState.INCOMPLETE and not ledger.image(part).trusted
    cs = chain_state(ledger, "vm", "drive0")
    assert cs.base.id == part and cs.restore_point.id == full
    # Not something to clean up: the next incremental stands on it.
    assert deletable_images(ledger, "vm") == []
    plan = make_plan(ledger, model([bm(ledger.image(full).bitmap, count=1 << 20)]), POLICY)
    assert plan.drives[0].kind == "incremental" and plan.drives[0].base.id == part
    top = image(ledger, "incremental", JobState.COMPLETED, parent=part)
    cs = chain_state(ledger, "vm", "drive0")
    assert cs.base.id == top and cs.restore_point.id == top
    # An on-success job that fails is INVALID as before (its bitmap was restored).
    bad = image(ledger, "incremental", JobState.FAILED, parent=top)
    assert ledger.image(bad).state is ImageState.INVALID
    assert chain_state(ledger, "vm", "drive0").base.id == top


def test_an_incomplete_full_starts_a_usable_chain(ledger):
    full = image(ledger, "full", JobState.FAILED, mode="always")
    cs = chain_state(ledger, "vm", "drive0")
    assert ledger.image(full).state is ImageState.INCOMPLETE
    assert cs.base.id == full and cs.restore_point is None


def test_an_older_ledger_gains_an_id_and_the_new_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    Ledger(path).close()
    db = sqlite3.connect(path)
    for col in ("bitmap_mode", "released", "file_dev", "file_ino", "file_size", "file_mtime_ns"):
        db.execute(f"ALTER TABLE images DROP COLUMN {col}")
    db.execute("DELETE FROM meta WHERE key = 'ledger_id'")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    db.commit()
    db.close()
    with Ledger(path) as led:
        assert len(led.ledger_id) == 8
        assert led._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == "2"
        iid = image(led, "full", JobState.COMPLETED)
        assert led.image(iid).state is ImageState.VALID and led.image(iid).bitmap_mode == "on-success"


async def test_reconcile_never_trusts_a_job_id_it_did_not_issue(fake_qmp, fleet_for, tmp_path):
    """A pending job under an old-style id ("bt1-0", the same in every ledger) is UNKNOWN even
    when QEMU has a successfully concluded job of that id: it may be another ledger's."""
    from tui.core.chains.reconcile import reconcile

    srv = await fake_qmp(replies={"query-jobs": [
        {"id": "bt1-0", "type": "backup", "status": "concluded", "current-progress": 1,
         "total-progress": 1}]})
    fleet = await fleet_for(srv.path)
    led = Ledger(tmp_path / "l.sqlite")
    txn = led.new_txn("vm0", "p", "individual")
    iid = led.add_image(txn_id=txn, connection="vm0", policy="p", drive="a", node="disk0",
                        bitmap="bm", path="/b/a.qcow2", kind="full", parent_id=None, job_id="bt1-0",
                        source_file=None, source_size=None)
    led.mark_sending(txn, [iid])
    led.mark_sent(txn)
    led.release([txn])
    rep = await reconcile(fleet["vm0"], led)
    assert rep.resolved == {"bt1-0": JobState.UNKNOWN}
    assert led.image(iid).state is ImageState.UNKNOWN
    assert "not issued by this ledger" in led.image(iid).error
    assert not [c for c in srv.received if c.get("execute") == "job-dismiss"]
    led.close()


def test_chain_view_shows_a_live_break_and_owners(ledger):
    from tui.core.chains.view import build_view
    from tui.core.model.state import FleetState

    full = image(ledger, "full", JobState.COMPLETED)
    name = ledger.image(full).bitmap
    observe_bitmap(ledger, "vm", model([bm(name, count=4 << 20)]).nodes["disk0"], name)
    fine = build_view(ledger, FleetState({"vm": model([bm(name, count=5 << 20)])}))
    assert fine.drives[0].next_base == ledger.image(full).path
    live = model([bm(name, count=0), bm("pbs-incremental-dirty-bitmap")])
    view = build_view(ledger, FleetState({"vm": live}))
    [d] = view.drives
    assert d.next_base is None and d.next_reason.startswith("chain broken: ") and "count dropped" \
        in d.next_reason
    assert {(b.name, b.owner, b.ours) for b in view.bitmaps} == {
        (name, "policy nightly (drive0)", True),
        ("pbs-incremental-dirty-bitmap", "Proxmox Backup Server", False)}
    assert view.problems == []


def test_a_composed_transaction_names_the_chains_it_breaks(ledger):
    from tui.core.chains.owners import chains_touched

    full = image(ledger, "full", JobState.COMPLETED)
    name = ledger.image(full).bitmap
    actions = [
        ("block-dirty-bitmap-add", {"node": "disk0", "name": "new"}),
        ("block-dirty-bitmap-clear", {"node": "disk0", "name": name}),
        ("block-dirty-bitmap-merge", {"node": "disk0", "target": name, "bitmaps": ["x"]}),
        ("blockdev-backup", {"device": "disk0", "bitmap": name, "sync": "incremental",
                             "target": "t", "job-id": "j"}),
        ("blockdev-backup", {"device": "disk0", "bitmap": name, "sync": "incremental",
                             "bitmap-mode": "never", "target": "t2", "job-id": "j2"}),
        ("block-dirty-bitmap-clear", {"node": "disk0", "name": "pbs-incremental-dirty-bitmap"}),
    ]
    touched = chains_touched(ledger, "vm", actions)
    assert [(w, r.policy, r.drive) for w, r in touched] == [
        ("clear", "nightly", "drive0"), ("merge", "nightly", "drive0"),
        ("backed up", "nightly", "drive0")]


def test_the_composer_warns_before_and_records_when_sent(ledger):
    """What the composer shows and records for a transaction touching a policy's chain: a
    warning per chain, and on sending a recorded break (the policy's next run is a full)."""
    from tui.core.chains.owners import transaction_breaks

    full = image(ledger, "full", JobState.COMPLETED)
    name = ledger.image(full).bitmap
    actions = [("block-dirty-bitmap-clear", {"node": "disk0", "name": name})]
    warned = transaction_breaks("vm", actions, ledger)
    assert warned == ["policy nightly's chain for drive0 will need a new full backup "
                      f"(this transaction clears its bitmap '{name}')"]
    assert ledger.breaks("vm") == []  # warning only: nothing sent yet
    assert transaction_breaks("vm", actions, ledger, record=True) == warned
    assert [b.reason for b in ledger.breaks("vm")] == [
        f"a composed transaction clears bitmap '{name}'"]
    assert chain_state(ledger, "vm", "drive0").base is None  # the next run takes a full
    assert transaction_breaks("vm", [("block-dirty-bitmap-add",
                                      {"node": "disk0", "name": "n"})], ledger) == []


@pytest.mark.parametrize("name,shown", [
    ("bt.a836cfe9.nightly.c3", "nightly·c3"), ("bt.0badc0de.my.policy.c12", "my.policy·c12"),
    ("pbs-incremental-dirty-bitmap", "pbs-incremental-dirty-bitmap"), ("bt.nope", "bt.nope"),
    ("bt.a836cfe9.nightly~sentinel.c3", "nightly·c3·sentinel"),
    ("bt.a836cfe9.nightly~size.c3", "nightly·c3·size"),
])
def test_short_name_says_what_an_owned_bitmap_is(name, shown):
    assert short_name(name) == shown
