"""Deleting INVALID/UNKNOWN backup images: what is offered, what is refused, the ledger record."""

from __future__ import annotations

import os
import sqlite3

import pytest

from tui.core.chains.cleanup import deletable_images, delete_images
from tui.core.chains.view import build_view
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageState, JobState
from tui.core.model.state import ConnectionModel, FleetState, LinkState, Node

C, F, U = JobState.COMPLETED, JobState.FAILED, JobState.UNKNOWN


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    yield led
    led.close()


def image(led, tmp_path, drive, kind, outcome, parent=None, connection="vm", directory=None,
          create=True):
    """One sent transaction with one image whose file this ledger created (unless ``create`` is
    false: then the record has no file of ours); returns its id."""
    txn = led.new_txn(connection, "p", "individual")
    path = (directory or tmp_path) / f"{drive}-{kind}-{txn}.qcow2"
    bitmap = led.image(parent).bitmap if parent else led.chain_bitmap("p", txn)
    iid = led.add_image(txn_id=txn, connection=connection, policy="p", drive=drive,
                        node=f"n-{drive}", bitmap=bitmap, path=str(path), kind=kind,
                        parent_id=parent, job_id=f"j{txn}", source_file=None, source_size=None)
    if create:
        path.write_bytes(b"x")
        led.set_file_identity(iid, os.stat(path))
    led.mark_sending(txn, [iid] if kind == "full" else [])
    led.mark_sent(txn)
    led.record_job(connection, f"j{txn}", outcome, None if outcome is C else "boom")
    led.mark_released(iid)
    led.settle(txn)
    return iid


def fleet(address, files=()):
    nodes = {f"n{i}": Node(f"n{i}", "qcow2", f, 1 << 20) for i, f in enumerate(files)}
    nodes["n-d0"] = Node("n-d0", "qcow2", "/d/d0.qcow2", 1 << 20, device="d0")
    model = ConnectionModel("vm", address, LinkState.CONNECTED, nodes=nodes, synced=True)
    return FleetState({"vm": model})


def test_only_unprotected_invalid_and_unknown_images_are_deletable(ledger, tmp_path):
    full = image(ledger, tmp_path, "d0", "full", C)
    bad = image(ledger, tmp_path, "d0", "incremental", F, parent=full)
    lost = image(ledger, tmp_path, "d0", "incremental", U, parent=full)
    # An UNKNOWN image that a VALID one was (oddly) built on is its backing file: kept.
    backing = image(ledger, tmp_path, "d0", "incremental", U, parent=full)
    image(ledger, tmp_path, "d0", "incremental", C, parent=backing)
    ids = [i.id for i in deletable_images(ledger, "vm")]
    assert ids == [bad, lost]
    # A file QEMU still has open is not offered either.
    open_path = ledger.image(bad).path
    assert [i.id for i in deletable_images(ledger, "vm", open_files=[open_path])] == [lost]


def test_delete_removes_files_records_it_and_refuses_valid(ledger, tmp_path):
    full = image(ledger, tmp_path, "d0", "full", C)
    bad = image(ledger, tmp_path, "d0", "incremental", F, parent=full)
    res = delete_images(ledger, "vm", [bad, full])
    assert res.deleted == [ledger.image(bad).path]
    assert len(res.refused) == 1 and "no longer deletable (state valid)" in res.refused[0]
    assert not res.ok
    assert not (tmp_path / ledger.image(bad).path).exists()
    assert (tmp_path / ledger.image(full).path).exists()
    assert ledger.image(bad).deleted is not None and ledger.image(full).deleted is None
    assert ledger.image(bad).state is ImageState.INVALID  # the outcome stays on record
    assert deletable_images(ledger, "vm") == []
    # Asked again (a stale view): refused, nothing happens.
    again = delete_images(ledger, "vm", [bad])
    assert again.deleted == [] and again.refused


def test_already_gone_file_is_recorded_too(ledger, tmp_path):
    bad = image(ledger, tmp_path, "d0", "full", F)
    (tmp_path / ledger.image(bad).path).unlink()
    res = delete_images(ledger, "vm", [bad])
    assert res.ok and res.already_gone == [ledger.image(bad).path]
    assert ledger.image(bad).deleted is not None


def test_view_offers_deletion_locally_and_lists_paths_for_remote(ledger, tmp_path):
    full = image(ledger, tmp_path, "d0", "full", C)
    bad = image(ledger, tmp_path, "d0", "incremental", F, parent=full)
    path = ledger.image(bad).path
    view = build_view(ledger, fleet("unix:/run/vm.qmp"))
    [pr] = [p for p in view.problems if p.kind == "invalid-images"]
    assert pr.image_ids == (bad,) and pr.paths == (path,) and not pr.remote and pr.deletes_files
    assert pr.fix.startswith("delete invalid image(s): d0-incremental-2.qcow2")
    assert view.to_dict()["problems"][-1]["paths"] == [path]
    remote = build_view(ledger, fleet("tcp:qemu.example:4444"))
    [rp] = [p for p in remote.problems if p.kind == "invalid-images"]
    assert rp.remote and not rp.deletes_files and "by hand" in rp.fix
    # Open in QEMU, offline, or deleted: not offered.
    assert not [p for p in build_view(ledger, fleet("unix:/x", [path])).problems
                if p.kind == "invalid-images"]
    assert build_view(ledger).problems == []
    delete_images(ledger, "vm", [bad])
    after = build_view(ledger, fleet("unix:/run/vm.qmp"))
    assert not [p for p in after.problems if p.kind == "invalid-images"]
    assert [i.deleted for i in after.drives[0].chain] == [False, True]


def test_old_ledger_gains_the_deleted_column(tmp_path):
    path = tmp_path / "old.sqlite"
    Ledger(path).close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE images DROP COLUMN deleted")
    db.commit()
    db.close()
    with Ledger(path) as led:
        image(led, tmp_path, "d0", "full", F)
        assert led.images()[0].deleted is None


def test_a_file_the_ledger_did_not_create_is_never_deleted(ledger, tmp_path):
    """An INVALID record whose file was never made (refused before creation): whatever is at
    that path later is someone else's."""
    bad = image(ledger, tmp_path, "d0", "full", F, create=False)
    other = tmp_path / os.path.basename(ledger.image(bad).path)
    other.write_bytes(b"someone else's image")
    assert deletable_images(ledger, "vm") == []
    res = delete_images(ledger, "vm", [bad])
    assert not res.ok and "never created that file" in res.refused[0]
    assert other.read_bytes() == b"someone else's image"


def test_a_replaced_or_changed_file_is_not_deleted(ledger, tmp_path):
    bad = image(ledger, tmp_path, "d0", "full", F)
    path = ledger.image(bad).path
    with open(path + ".new", "wb") as fh:  # a new file moved over it: another inode
        fh.write(b"new file")
    os.replace(path + ".new", path)
    res = delete_images(ledger, "vm", [bad])
    assert not res.ok and "another file is at that path" in res.refused[0]
    assert open(path, "rb").read() == b"new file"
    # The same file, written to after the ledger let go of it: refused as well.
    bad2 = image(ledger, tmp_path, "d0", "full", F)
    with open(ledger.image(bad2).path, "ab") as fh:
        fh.write(b"more")
    assert "changed since" in delete_images(ledger, "vm", [bad2]).refused[0]
    assert os.path.exists(ledger.image(bad2).path)


def test_a_path_alias_of_a_valid_image_is_kept(ledger, tmp_path):
    """Two VMs whose target directories are one directory through a symlink: vm-b's INVALID
    record names vm-a's VALID file under another path; it is compared by identity."""
    real = tmp_path / "backups"
    real.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(real)
    good = image(ledger, tmp_path, "d0", "full", C, connection="vm-a", directory=real)
    good_path = ledger.image(good).path
    # vm-b's INVALID image: a record whose path is the same file through the alias, and whose
    # identity matches (as if it had been created there and the other one was recorded on it).
    bad = image(ledger, tmp_path, "d0", "full", F, connection="vm-b", directory=alias,
                create=False)
    alias_path = ledger.image(bad).path
    os.rename(good_path, os.path.join(real, os.path.basename(alias_path)))
    os.symlink(os.path.basename(alias_path), good_path)  # vm-a's name still reaches the file
    ledger.set_file_identity(bad, os.stat(alias_path))
    assert os.path.samefile(alias_path, good_path)
    assert deletable_images(ledger, "vm-b") == []
    res = delete_images(ledger, "vm-b", [bad])
    assert not res.ok and os.path.exists(good_path)
    assert ledger.image(good).state is ImageState.VALID
