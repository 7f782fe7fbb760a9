"""Backup transactions: model, YAML files, pre-flight checks, what-if, tracker and verdict.

No Textual here: the headless ``apply`` command, the composer screen and the backup ledger share
this code. The public API:

- :class:`~tui.txn.model.Transaction`, :class:`~tui.txn.model.Action` (QMP's own shape);
- :func:`~tui.txn.files.load` / :func:`~tui.txn.files.save` (YAML);
- :func:`~tui.txn.checks.prepare` → :class:`~tui.txn.checks.Prepared` (findings, resolved txn);
- :func:`~tui.txn.verdict.what_if` (before sending), :func:`~tui.txn.verdict.decide`;
- :class:`~tui.txn.tracker.TransactionRun` (send, follow, :class:`~tui.txn.verdict.Verdict`).
"""

from tui.txn.checks import ERROR, INFO, WARNING, Finding, Prepared, blockdev_equivalent, prepare
from tui.txn.files import dumps, load, loads, save
from tui.txn.model import GROUPED, INDIVIDUAL, Action, Transaction
from tui.txn.tracker import JobView, TransactionRun
from tui.txn.verdict import Scenario, Verdict, decide, describe, what_if

__all__ = [
    "ERROR", "GROUPED", "INDIVIDUAL", "INFO", "WARNING", "Action", "Finding", "JobView",
    "Prepared", "Scenario", "Transaction", "TransactionRun", "Verdict", "blockdev_equivalent",
    "decide", "describe", "dumps", "load", "loads", "prepare", "save", "what_if",
]
