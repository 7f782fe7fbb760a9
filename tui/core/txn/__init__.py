"""Backup transactions: model, YAML files, pre-flight checks, what-if, tracker and verdict.

No Textual here: the headless ``apply`` command, the composer screen and the backup ledger share
this code. The public API:

- :class:`~tui.core.txn.model.Transaction`, :class:`~tui.core.txn.model.Action` (QMP's own shape);
- :func:`~tui.core.txn.files.load` / :func:`~tui.core.txn.files.save` (YAML);
- :func:`~tui.core.txn.checks.prepare` → :class:`~tui.core.txn.checks.Prepared` (findings, resolved txn);
- :func:`~tui.core.txn.verdict.what_if` (before sending), :func:`~tui.core.txn.verdict.decide`, and the
  rules they share: :func:`~tui.core.txn.verdict.image_verdict` (VALID, INVALID, INCOMPLETE),
  :func:`~tui.core.txn.verdict.bitmap_outcome`, :func:`~tui.core.txn.verdict.usable_as_base`;
- :class:`~tui.core.txn.tracker.TransactionRun` (send, follow, :class:`~tui.core.txn.verdict.Verdict`),
  or :func:`~tui.core.txn.tracker.apply_transaction` (check + send + follow in one call).

A :class:`Verdict` has ``jobs`` (:class:`JobVerdict`: job_id, device, node, target, result,
error, image, sync, bitmap, bitmap_outcome, verdict, bitmap_mode, image_valid), ``images``
(:class:`ImageVerdict`: valid, invalid or incomplete), ``bitmaps`` (:class:`BitmapVerdict`, with
measured counts), ``next`` (sentences), ``checks``, ``accepted``/``error``, ``exit_code`` and
``to_dict()`` (the ``apply --json`` shape).
"""

from tui.core.txn.checks import (
    ERROR,
    INFO,
    NOTICE,
    WARNING,
    Finding,
    Prepared,
    blockdev_equivalent,
    prepare,
)
from tui.core.txn.files import dumps, load, loads, save
from tui.core.txn.model import GROUPED, INDIVIDUAL, Action, Transaction
from tui.core.txn.tracker import JobView, TransactionRun, apply_transaction
from tui.core.txn.verdict import (
    INCOMPLETE,
    INVALID,
    VALID,
    BitmapVerdict,
    ImageVerdict,
    JobVerdict,
    Scenario,
    Verdict,
    decide,
    describe,
    image_verdict,
    what_if,
)

__all__ = [
    "ERROR", "GROUPED", "INCOMPLETE", "INDIVIDUAL", "INFO", "INVALID", "NOTICE", "VALID", "WARNING", "Action", "BitmapVerdict", "Finding",
    "ImageVerdict", "JobVerdict", "JobView", "Prepared", "Scenario", "Transaction",
    "TransactionRun", "Verdict", "apply_transaction", "blockdev_equivalent", "decide", "describe",
    "dumps", "image_verdict", "load", "loads", "prepare", "save", "what_if",
]
