"""Transaction files: the documentation's examples load as they are; bad files give one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit.common import SAMPLES
from tui.core.base.errors import ConfigError
from tui.core.txn import GROUPED, INDIVIDUAL, dumps, load, loads
from tui.core.txn.model import Action, Transaction

# Verbatim from the bitmaps documentation (QMP JSON, trailing commas included).
DOC_GROUPED = """
 { "execute": "transaction",
 "arguments": {
 "actions": [
 { "type": "drive-backup",
 "data": { "device": "drive0", "bitmap": "bitmap0",
 "format": "qcow2", "mode": "existing",
 "sync": "incremental", "target": "d0-incr-1.qcow2" } },
 { "type": "drive-backup",
 "data": { "device": "drive1", "bitmap": "bitmap1",
 "format": "qcow2", "mode": "existing",
 "sync": "incremental", "target": "d1-incr-1.qcow2" } },
 ],
 "properties": {
 "completion-mode": "grouped"
 }
 }
 }
"""


def test_documentation_json_loads_as_is_and_matches_the_samples() -> None:
    doc = loads(DOC_GROUPED, "doc")
    assert doc.completion_mode == GROUPED and len(doc.actions) == 2
    assert load(SAMPLES / "txn-incremental-grouped.yaml") == doc
    individual = load(SAMPLES / "txn-incremental-individual.yaml")
    assert individual == doc.with_mode(INDIVIDUAL)
    # what is sent in individual mode is exactly the documentation's first example
    assert individual.to_qmp() == {"actions": [a.to_qmp() for a in doc.actions]}


def test_every_sample_loads() -> None:
    files = sorted(SAMPLES.glob("txn-*.yaml"))
    assert len(files) >= 4
    for f in files:
        txn = load(f)
        assert txn.actions, f
        assert f.read_text().startswith("#"), f"{f.name} has no explaining comment"


def test_round_trip() -> None:
    txn = Transaction((
        Action("block-dirty-bitmap-merge", {"node": "disk0", "target": "b",
                                            "bitmaps": ["a", {"node": "disk1", "name": "c"}]}),
        Action("blockdev-backup", {"device": "disk0", "job-id": "j", "sync": "bitmap",
                                   "bitmap": "b", "bitmap-mode": "always", "target": "t",
                                   "speed": 1024, "auto-finalize": False}),
    ), GROUPED)
    assert loads(dumps(txn)) == txn
    assert "completion-mode: grouped" in dumps(txn)


@pytest.mark.parametrize("text,message", [
    ("actions: [", "f.yaml:1: not valid YAML"),
    ("- a\n- b\n", "f.yaml:1: expected a mapping with 'actions'"),
    ("properties: {completion-mode: grouped}\n", "f.yaml:1: actions: missing"),
    ("actions: {}\n", "f.yaml:1: actions: expected a list"),
    ("actions: []\nextra: 1\n", "f.yaml:2: extra: unknown key"),
    ("actions: []\nproperties:\n  completion-mode: all\n",
     "f.yaml:3: properties.completion-mode: must be 'individual' or 'grouped', not 'all'"),
    ("actions:\n  - type: frobnicate\n", "f.yaml:2: actions[0].type: unknown action type 'frobnicate'"),
    ("actions:\n  - {type: block-dirty-bitmap-add, data: {node: d, name: b, granularity: big}}\n",
     "f.yaml:2: actions[0].data.granularity: expected an integer"),
    ("actions:\n  - type: drive-backup\n    data:\n      device: drive0\n      sync: full\n",
     "f.yaml:3: actions[0].data: drive-backup needs 'target'"),
    ("actions:\n  - type: block-dirty-bitmap-merge\n    data:\n      node: n\n      target: t\n"
     "      bitmaps:\n        - {node: x}\n",
     "f.yaml:7: actions[0].data.bitmaps[0]: expected a bitmap name or {node, name}"),
    ("execute: query-block\n", "f.yaml:1: execute: only 'transaction' can be loaded"),
    ("actions:\n  - type: blockdev-backup\n    dat: {}\n", "f.yaml:3: actions[0].dat: unknown key"),
])
def test_bad_files_give_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(text, "f.yaml")
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(message), line


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="transaction file not found"):
        load(tmp_path / "nope.yaml")
