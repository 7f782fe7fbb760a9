"""Ledger rules, planner chain logic and policy validation (no QEMU needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.kit.common import make_policy
from tui.core.base.errors import ConfigError
from tui.core.base.paths import default_ledger_path as default_path
from tui.core.chains.chain import chain_state
from tui.core.chains.policy import render_name
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageState, JobState, TxnState


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    yield led
    led.close()


def add(led, txn, drive, kind, parent=None, job=None, bitmap=None, mode="on-success"):
    """A planned image; a full starts an owned bitmap, an incremental uses its parent's."""
    if bitmap is None:
        bitmap = led.image(parent).bitmap if parent is not None else led.chain_bitmap("p", txn)
    return led.add_image(
        txn_id=txn, connection="vm", policy="p", drive=drive, node=f"n-{drive}", bitmap=bitmap,
        path=f"/b/{drive}-{txn}.qcow2", kind=kind, parent_id=parent, job_id=job or f"j{txn}-{drive}",
        source_file=f"/d/{drive}.qcow2", source_size=1 << 20, bitmap_mode=mode,
    )


def run(led, mode, drives, outcomes, parents=None, kinds=None):
    """One sent transaction with given job outcomes; returns {drive: image id}."""
    txn = led.new_txn("vm", "p", mode)
    ids = {d: add(led, txn, d, (kinds or {}).get(d, "incremental" if parents else "full"),
                  (parents or {}).get(d)) for d in drives}
    fulls = [i for d, i in ids.items() if led.image(i).kind == "full"]
    led.mark_sending(txn, fulls)
    led.mark_sent(txn)
    for d, state in outcomes.items():
        led.record_job("vm", f"j{txn}-{d}", state, None if state is JobState.COMPLETED else "boom")
        led.mark_released(ids[d])  # the run detached the target after the job
    led.settle(txn)
    return txn, ids


def test_default_path_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "st"))
    assert default_path() == tmp_path / "st" / "bitmap-tui" / "ledger.sqlite"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/not/allowed")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / ".local" / "state" / "bitmap-tui" / "ledger.sqlite"


def test_wal_and_full_sync(ledger):
    assert ledger._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_individual_each_image_follows_its_job(ledger):
    C, F, U = JobState.COMPLETED, JobState.FAILED, JobState.UNKNOWN
    txn, ids = run(ledger, "individual", ["a", "b", "c"], {"a": C, "b": F, "c": U})
    states = {d: ledger.image(i).state for d, i in ids.items()}
    assert states == {"a": ImageState.VALID, "b": ImageState.INVALID, "c": ImageState.UNKNOWN}
    assert ledger.image(ids["b"]).error == "boom"
    assert ledger.txn(txn).state is TxnState.DONE


def test_grouped_one_failure_invalidates_all(ledger):
    txn, ids = run(ledger, "grouped", ["a", "b"], {"a": JobState.CANCELLED, "b": JobState.FAILED})
    assert {ledger.image(i).state for i in ids.values()} == {ImageState.INVALID}
    txn2, ids2 = run(ledger, "grouped", ["a", "b"], {"a": JobState.COMPLETED, "b": JobState.UNKNOWN})
    assert {ledger.image(i).state for i in ids2.values()} == {ImageState.UNKNOWN}
    txn3, ids3 = run(ledger, "grouped", ["a", "b"], {"a": JobState.COMPLETED})
    assert {ledger.image(i).state for i in ids3.values()} == {ImageState.PENDING}
    assert ledger.txn(txn3).state is TxnState.SENT
    ledger.record_job("vm", f"j{txn3}-b", JobState.COMPLETED)
    ledger.settle(txn3)
    # Every job completed, but one target is not released yet: the group does not count.
    assert {ledger.image(i).state for i in ids3.values()} == {ImageState.PENDING}
    ledger.mark_released(ids3["b"])
    ledger.settle(txn3)
    assert {ledger.image(i).state for i in ids3.values()} == {ImageState.VALID}


def test_chain_state_rules(ledger):
    C = JobState.COMPLETED
    _, full = run(ledger, "individual", ["a"], {"a": C})
    assert chain_state(ledger, "vm", "a").base.id == full["a"]
    _, inc1 = run(ledger, "individual", ["a"], {"a": C}, parents={"a": full["a"]})
    assert ledger.image(inc1["a"]).chain_id == full["a"]
    # A failed incremental: its bitmap was restored, the base stays incremental 1.
    _, bad = run(ledger, "individual", ["a"], {"a": JobState.FAILED}, parents={"a": inc1["a"]})
    cs = chain_state(ledger, "vm", "a")
    assert cs.base.id == inc1["a"] and [i.id for i in cs.images] == [full["a"], inc1["a"], bad["a"]]
    # An unknown incremental may have cleared the bitmap: no base any more.
    run(ledger, "individual", ["a"], {"a": JobState.UNKNOWN}, parents={"a": inc1["a"]})
    assert chain_state(ledger, "vm", "a").base is None
    assert "unknown" in chain_state(ledger, "vm", "a").reason
    # A new chain whose full failed: its bitmap was reset, so the old chain is over too.
    run(ledger, "individual", ["a"], {"a": JobState.FAILED}, kinds={"a": "full"})
    cs = chain_state(ledger, "vm", "a")
    assert cs.base is None and "is invalid" in cs.reason


def test_refused_transaction_keeps_old_chain(ledger):
    _, full = run(ledger, "individual", ["a"], {"a": JobState.COMPLETED})
    txn = ledger.new_txn("vm", "p", "individual")
    img = add(ledger, txn, "a", "full")
    ledger.mark_sending(txn, [img])
    assert chain_state(ledger, "vm", "a").busy is not None
    ledger.mark_refused(txn, "Bitmap already exists: bm")
    im = ledger.image(img)
    assert im.state is ImageState.INVALID and not im.resets_bitmap
    assert chain_state(ledger, "vm", "a").base.id == full["a"]
    # ...unless an earlier step of the run already reset the bitmap.
    txn = ledger.new_txn("vm", "p", "grouped")
    img = add(ledger, txn, "a", "full")
    ledger.mark_bitmap_reset([img])
    ledger.mark_refused(txn, "no", keep_reset=[img])
    assert ledger.image(img).resets_bitmap and chain_state(ledger, "vm", "a").base is None


def test_every_change_is_committed_at_once(tmp_path):
    """Another process sees each state change as soon as the call returns (no open transaction)."""
    path = tmp_path / "l.sqlite"
    led = Ledger(path)
    txn = led.new_txn("vm", "p", "individual")
    add(led, txn, "a", "full")
    led.mark_sending(txn, [])
    code = (
        "import sys; from tui.core.ledger.repository import Ledger\n"
        f"l = Ledger({str(path)!r}); t = l.txns()[0]\n"
        "print(t.state, [i.state.value for i in l.images()], [j.state.value for j in l.jobs(t.id)])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["sending", "['pending']", "['pending']"]
    led.close()


def test_policy_validation():
    """Policies are checked by the config loader (the one validator), key and reason named."""
    ok = make_policy("nightly", {"connection": "vm0", "drives": "drive0", "target_dir": "/b"})
    assert ok.drives == ("drive0",) and ok.completion_mode == "individual" and ok.bitmap == "bitmap-tui"
    base = {"connection": "v", "drives": ["d"], "target_dir": "/b"}
    bad = [
        ({"drives": ["d"], "target_dir": "/b"}, "policies.p: missing required key 'connection'"),
        ({**base, "drives": []}, "policies.p.drives: needs at least one drive"),
        ({**base, "drives": ["d", "d"]}, "a drive is listed twice"),
        ({**base, "completion_mode": "all"}, "must be one of individual, grouped"),
        ({**base, "format": "raw"}, "only qcow2 can hold an incremental chain"),
        ({**base, "pattern": "{drive}.qcow2"}, "needs {n}, {timestamp} or {txn}"),
        ({**base, "drives": ["d", "e"], "pattern": "x-{n}"}, "needs {drive}"),
        ({**base, "pattern": "{x}-{txn}"}, "unknown field {x}"),
        ({**base, "pattern": "a/{txn}"}, "the pattern is a file name"),
        ({**base, "speed": -1}, "policies.p.speed"),
        ({**base, "granularity": 1000}, "power of two"),
        ({**base, "colour": 1}, "policies.p.colour: unknown key"),
        ({**base, "target_dir": "b"}, "must be an absolute path on the QEMU host"),
    ]
    for data, msg in bad:
        with pytest.raises(ConfigError) as err:
            make_policy("p", data)
        assert msg in str(err.value)
    assert render_name("{drive}-{txn}-{kind}{n}.qcow2", drive="d0", txn=3, kind="incr", n=2) == "d0-3-incr2.qcow2"
    assert render_name("{drive}-{timestamp}", drive="d").startswith("d-20")


def ok_dict():
    return {"connection": "vm0", "drives": ["drive0"], "target_dir": "/b"}


def test_reset_under_another_drive_name_ends_the_chain(ledger):
    """Policy A names the disk 'drive0', policy B its node 'n-a': a full by B resets the bitmap."""
    _, full = run(ledger, "individual", ["a"], {"a": JobState.COMPLETED})
    assert chain_state(ledger, "vm", "a", "n-a", "bm").base.id == full["a"]
    txn = ledger.new_txn("vm", "q", "individual")
    other = ledger.add_image(txn_id=txn, connection="vm", policy="q", drive="alias", node="n-a",
                             bitmap="bm", path="/b/alias.qcow2", kind="full", parent_id=None,
                             job_id="jx", source_file=None, source_size=None)
    ledger.mark_sending(txn, [other])
    cs = chain_state(ledger, "vm", "a", "n-a", "bm")
    assert cs.base is None and "reset by a backup of alias" in cs.reason
    # A different bitmap on the same node does not matter.
    assert chain_state(ledger, "vm", "a", "n-a", "other").base.id == full["a"]


def test_owner_liveness(tmp_path):
    from tui.core.ledger.names import OWNER, owner_alive

    assert owner_alive(OWNER)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = OWNER.rpartition(":")[0]
    assert not owner_alive(f"{host}:{dead.pid}")
    assert not owner_alive(None)
    assert owner_alive("some-other-host:1")  # cannot tell: leave it alone


async def test_reconcile_on_qemu_without_query_jobs(fake_qmp, fleet_for, tmp_path):
    """QEMU < 3.0: a job still listed by query-block-jobs is running, not unknown."""
    from tui.core.chains.reconcile import reconcile

    led = Ledger(tmp_path / "l.sqlite")
    job = led.job_id(1, 0)
    srv = await fake_qmp(version=(2, 12, 0), replies={
        "query-block-jobs": [{"device": job, "type": "backup", "len": 100, "offset": 10,
                              "busy": True, "paused": False, "speed": 0, "io-status": "ok",
                              "ready": False, "status": "running"}],
    })
    srv.replies["query-commands"] = [c for c in srv.replies["query-commands"] if c["name"] != "query-jobs"]
    srv.replies["query-jobs"] = {"error": {"class": "CommandNotFound", "desc": "no query-jobs"}}
    fleet = await fleet_for(srv.path)
    txn = led.new_txn("vm0", "p", "individual")
    add(led, txn, "a", "full", job=job)
    led.mark_sending(txn)
    led.mark_sent(txn)
    led.release([txn])
    rep = await reconcile(fleet["vm0"], led)
    assert rep.running == [job] and rep.resolved == {}
    assert led.images()[0].state is ImageState.PENDING
    led.close()
