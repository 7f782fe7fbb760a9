"""The verdict rules without QEMU: bitmap outcomes, image verdicts, counts, advice per drive.

The expectations are QEMU's (iotests 124 and 257); tests/qemu/test_iotest_257.py and
tests/qemu/test_iotest_124.py show the same on a real QEMU.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.kit.txn import bd, incr, model
from tui.core.txn import GROUPED, INDIVIDUAL, Transaction, prepare, what_if
from tui.core.txn.verdict import (
    CANCELLED,
    CLEARED,
    COMPLETED,
    FAILED,
    INCOMPLETE,
    INVALID,
    LOST,
    OUTCOME_MEANING,
    PARTLY_SYNCED,
    RE_DIRTIED,
    RESTORED,
    UNCHANGED,
    VALID,
    BitmapVerdict,
    bitmap_line,
    bitmap_outcome,
    counts_agree,
    decide,
    describe,
    image_verdict,
    usable_as_base,
)

# (sync, bitmap-mode, result, copied everything) → (bitmap outcome, image verdict)
OUTCOMES = [
    ("bitmap", "never", COMPLETED, True, UNCHANGED, VALID),
    ("bitmap", "never", CANCELLED, True, UNCHANGED, INVALID),
    ("bitmap", "never", FAILED, False, UNCHANGED, INVALID),
    ("bitmap", "on-success", COMPLETED, True, CLEARED, VALID),
    ("incremental", None, COMPLETED, True, CLEARED, VALID),
    ("bitmap", "on-success", CANCELLED, True, RESTORED, INVALID),
    ("bitmap", "on-success", FAILED, False, RESTORED, INVALID),
    ("bitmap", "always", COMPLETED, True, CLEARED, VALID),
    # 257 "simulated": cancelled while pending, everything copied → only the writes since remain
    ("bitmap", "always", CANCELLED, True, CLEARED, INCOMPLETE),
    # 257 "intermediate": what was not copied stays
    ("bitmap", "always", FAILED, False, PARTLY_SYNCED, INCOMPLETE),
    ("bitmap", "always", CANCELLED, False, PARTLY_SYNCED, INCOMPLETE),
    ("full", "on-success", FAILED, False, RESTORED, INVALID),
    ("full", "always", CANCELLED, True, CLEARED, INCOMPLETE),
    # 257 full/top "intermediate": every bit not copied yet is set (full: 6 → 1009)
    ("full", "always", FAILED, False, RE_DIRTIED, INCOMPLETE),
    ("top", "always", FAILED, False, RE_DIRTIED, INCOMPLETE),
    ("top", "on-success", COMPLETED, True, CLEARED, VALID),
    ("bitmap", "always", LOST, False, PARTLY_SYNCED, INVALID),
]


@pytest.mark.parametrize("sync,mode,result,copied_all,outcome,image", OUTCOMES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}-{'all' if c[3] else 'part'}" for c in OUTCOMES])
def test_outcome_and_image_verdict(sync: str, mode: str | None, result: str, copied_all: bool,
                                   outcome: str, image: str) -> None:
    effective = mode or "on-success"
    assert bitmap_outcome(sync, effective, result, copied_all) == outcome
    assert image_verdict(result, "bitmap0", effective) == image


def test_only_valid_and_incomplete_are_bases() -> None:
    assert [usable_as_base(v) for v in (VALID, INCOMPLETE, INVALID)] == [True, True, False]


G = 65536
# (outcome, before, after, written during, left to copy) → agrees?
COUNTS = [
    # 257 "without failure", on-success: 6 clusters before, group 2 (7) written during the job
    (CLEARED, 6 * G, 7 * G, 7 * G, 0, True),
    (CLEARED, 458752, 0, 0, 0, True),  # 124: nothing written during the job
    (CLEARED, 6 * G, 6 * G, 0, 0, None),  # written after the last look, or not cleared: unknown
    (CLEARED, 6 * G, 2 * G, 3 * G, 0, False),  # fewer bits than were written during the job
    (RESTORED, 6 * G, 10 * G, 7 * G, 0, True),  # 257 simulated, on-success: 6 ∪ 7 = 10
    (RESTORED, 6 * G, 5 * G, 0, 0, False),
    (UNCHANGED, 6 * G, 6 * G, 0, 0, True),
    (PARTLY_SYNCED, 6 * G, 5 * G, 0, 5 * G, True),  # 257 intermediate, always: one cluster copied
    (PARTLY_SYNCED, 6 * G, 0, 0, 5 * G, False),
    (RE_DIRTIED, 6 * G, 1009 * G, 0, 1009 * G, True),  # 257 full intermediate, always
]


@pytest.mark.parametrize("outcome,before,after,written,left,agrees", COUNTS)
def test_counts_agree(outcome: str, before: int, after: int, written: int, left: int,
                      agrees: bool | None) -> None:
    assert counts_agree(outcome, before, after, written_during=written,
                        left_to_copy=left) is agrees


def test_restored_with_the_same_hash_agrees() -> None:
    assert counts_agree(RESTORED, 10, 10, same_hash=True) is True


def always_and_incremental(mode: str) -> Transaction:
    return prepare(Transaction((
        bd("disk0", "tgt0", sync="bitmap", bitmap="bitmap0", **{"bitmap-mode": "always"}),
        bd("disk1", "tgt1", sync="incremental", bitmap="bitmap1"),
    ), mode), model()).transaction


def test_grouped_always_and_failing_job_advice_is_per_drive() -> None:
    """Issue defect 6: the always bitmap was synced, so 're-run the same transaction' is wrong."""
    txn = always_and_incremental(GROUPED)
    v = decide(txn, model(), {"j-disk0": (CANCELLED, None), "j-disk1": (FAILED, "Input/output error")},
               copied_all={"j-disk0": True, "j-disk1": False})
    assert [i.verdict for i in v.images] == [INCOMPLETE, INVALID]
    assert [b.outcome for b in v.bitmaps] == [CLEARED, RESTORED]
    text = "\n".join(v.next)
    assert "every incremental bitmap was restored" not in text
    assert not any(n.endswith("re-run the same transaction") for n in v.next)
    assert "do not re-run the same transaction" in text
    assert ("drive0's next incremental with bitmap0 must be based on /backups/t0.qcow2" in text)
    assert ("drive1's next incremental must be based on its last valid image (the one before "
            "/backups/t1.qcow2)" in text)
    assert "delete /backups/t1.qcow2" in text and "delete /backups/t0.qcow2" not in text


def test_incomplete_image_is_a_base_not_a_new_full() -> None:
    """Issue defect 5: an always partial image is kept as the next incremental's base."""
    txn = always_and_incremental(INDIVIDUAL)
    v = decide(txn, model(), {"j-disk0": (FAILED, "Input/output error"), "j-disk1": (COMPLETED, None)})
    lines = describe(v)
    assert ("image /backups/t0.qcow2: INCOMPLETE (keep as the base of the next incremental; not a "
            "restore point)") in lines
    assert not any("new full backup" in n for n in v.next)
    assert any("t0.qcow2 is INCOMPLETE (failed: Input/output error): not a restore point" in n
               for n in v.next)
    assert v.to_dict()["images"][0] == {"path": "/backups/t0.qcow2", "verdict": "incomplete"}
    assert v.jobs[0].verdict == INCOMPLETE and not v.jobs[0].image_valid


def test_what_if_uses_the_same_rules() -> None:
    txn = always_and_incremental(GROUPED)
    scenarios = what_if(txn, model())
    fails = scenarios[2].verdict  # drive1 fails, drive0 cancelled part-way (not known how far)
    assert [i.verdict for i in fails.images] == [INCOMPLETE, INVALID]
    assert [b.outcome for b in fails.bitmaps] == [PARTLY_SYNCED, RESTORED]
    assert not any(n.endswith("re-run the same transaction") for n in fails.next)


def test_grouped_restored_only_still_says_rerun() -> None:
    txn = prepare(Transaction((incr(), incr("drive1", "bitmap1", "/b/d1.qcow2")), GROUPED),
                  model()).transaction
    v = decide(txn, model(), {"drive0": (CANCELLED, None), "drive1": (FAILED, "EIO")})
    assert any(n.endswith("re-run the same transaction") for n in v.next)


def test_lost_job_advice_is_safe() -> None:
    txn = prepare(Transaction((incr(),)), model()).transaction
    v = decide(txn, model(), {})
    assert v.jobs[0].result == LOST and v.images[0].verdict == INVALID
    assert any("is not known" in n and "full backup" in n for n in v.next)


def describe_bitmaps(**kw: Any) -> list[str]:
    return [line for line in describe(decide(always_and_incremental(INDIVIDUAL), model(), **kw))
            if line.startswith("bitmap")]


def test_describe_says_the_words() -> None:
    lines = describe_bitmaps(results={"j-disk0": (FAILED, "EIO"), "j-disk1": (COMPLETED, None)})
    assert lines == [
        "bitmap disk0/bitmap0: partly synced (holds what the job did not copy plus the writes "
        "since it started)",
        "bitmap disk1/bitmap1: cleared (holds only the writes since the job started)",
    ]


def test_bitmap_line_counts_in_human_units() -> None:
    """The text names sizes as every other screen does (the JSON keeps exact bytes)."""
    measured = BitmapVerdict("disk0", "b0", CLEARED, count_before=7733248, count_after=0,
                             written_during=65536)
    assert bitmap_line(measured) == ("bitmap disk0/b0: cleared, dirty 7.4 MiB → 0 B, 64 KiB "
                                     "written during the job (" + OUTCOME_MEANING[CLEARED] + ")")
