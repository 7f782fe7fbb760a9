"""Transaction files: YAML in QMP's own shape.

Accepted forms (so the QEMU documentation's JSON examples, which are valid YAML, load as they are):

    actions: [{type: drive-backup, data: {...}}, ...]
    properties: {completion-mode: grouped}      # optional, default individual

or the whole command ``{execute: transaction, arguments: {actions: [...], properties: {...}}}``.
A bad file raises :class:`~tui.core.base.errors.ConfigError` with one line naming the file, the key and the
line, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tui.core.base.errors import ConfigError
from tui.core.base.yamlnodes import BoundedLoader, read_limited
from tui.core.txn.model import COMPLETION_MODES, INDIVIDUAL, Action, Transaction

# TransactionActionKind (QEMU 7.2); the ones we do not check in depth are still sent as given.
KNOWN_TYPES = frozenset(
    {
        "abort",
        "block-dirty-bitmap-add",
        "block-dirty-bitmap-remove",
        "block-dirty-bitmap-clear",
        "block-dirty-bitmap-enable",
        "block-dirty-bitmap-disable",
        "block-dirty-bitmap-merge",
        "blockdev-backup",
        "blockdev-snapshot",
        "blockdev-snapshot-internal-sync",
        "blockdev-snapshot-sync",
        "drive-backup",
    }
)

_BACKUP_COMMON = {
    "job-id": str, "device": str, "sync": str, "speed": int, "bitmap": str, "bitmap-mode": str,
    "compress": bool, "on-source-error": str, "on-target-error": str, "auto-finalize": bool,
    "auto-dismiss": bool, "filter-node-name": str, "target": str, "x-perf": dict,
}
# Known data keys and their YAML types, per action type (QEMU 7.2 schema).
DATA_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "drive-backup": {**_BACKUP_COMMON, "format": str, "mode": str},
    "blockdev-backup": dict(_BACKUP_COMMON),
    "block-dirty-bitmap-add": {"node": str, "name": str, "granularity": int, "persistent": bool,
                               "disabled": bool},
    "block-dirty-bitmap-remove": {"node": str, "name": str},
    "block-dirty-bitmap-clear": {"node": str, "name": str},
    "block-dirty-bitmap-enable": {"node": str, "name": str},
    "block-dirty-bitmap-disable": {"node": str, "name": str},
    "block-dirty-bitmap-merge": {"node": str, "target": str, "bitmaps": list},
}
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "drive-backup": ("device", "sync", "target"),
    "blockdev-backup": ("device", "sync", "target"),
    "block-dirty-bitmap-add": ("node", "name"),
    "block-dirty-bitmap-remove": ("node", "name"),
    "block-dirty-bitmap-clear": ("node", "name"),
    "block-dirty-bitmap-enable": ("node", "name"),
    "block-dirty-bitmap-disable": ("node", "name"),
    "block-dirty-bitmap-merge": ("node", "target", "bitmaps"),
}


def _line(root: yaml.Node | None, path: list[str | int]) -> int | None:
    """1-based line of the YAML node at ``path`` (or of its deepest existing parent)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for step in path:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == step:
                    nxt = v
                    line = k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if 0 <= step < len(node.value):
                nxt = node.value[step]
                line = nxt.start_mark.line + 1
        if nxt is None:
            break
        node = nxt
    return line


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a mapping"}
    if isinstance(t, tuple):
        return " or ".join(names.get(x, x.__name__) for x in t)
    return names.get(t, t.__name__)


class _Reader:
    def __init__(self, source: str, root: yaml.Node | None) -> None:
        self.source = source
        self.root = root

    def fail(self, path: list[str | int], message: str) -> ConfigError:
        key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
        line = _line(self.root, path)
        where = f"{self.source}:{line}" if line else self.source
        text = f"{where}: {key + ': ' if key else ''}{message}"
        if not text.isprintable():  # a key or value with a newline/control character in it
            text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
        return ConfigError(text)


def parse_document(doc: Any, source: str = "<transaction>", root: yaml.Node | None = None) -> Transaction:
    """A loaded YAML/JSON document → :class:`Transaction` (raises ConfigError)."""
    r = _Reader(source, root)
    doc, base = _unwrap(r, doc)
    for key in doc:
        if key not in ("actions", "properties"):
            raise r.fail([*base, str(key)], "unknown key (expected 'actions' or 'properties')")
    mode = _completion_mode(r, doc.get("properties"), [*base, "properties"])
    raw_actions = doc.get("actions")
    if raw_actions is None:
        raise r.fail([*base, "actions"], "missing (a list of {type, data})")
    if not isinstance(raw_actions, list):
        raise r.fail([*base, "actions"], "expected a list of {type, data}")
    actions = [_action(r, raw, [*base, "actions", i]) for i, raw in enumerate(raw_actions)]
    return Transaction(tuple(actions), mode)


def _unwrap(r: _Reader, doc: Any) -> tuple[dict[str, Any], list[str | int]]:
    """The transaction's arguments: the document itself, or a whole QMP ``execute`` message."""
    if not isinstance(doc, dict):
        raise r.fail([], "expected a mapping with 'actions' (and optionally 'properties')")
    if "execute" not in doc:
        return doc, []
    if doc.get("execute") != "transaction":
        raise r.fail(["execute"], f"only 'transaction' can be loaded, not {doc.get('execute')!r}")
    extra = set(doc) - {"execute", "arguments"}
    if extra:
        raise r.fail([sorted(extra)[0]], "unknown key")
    args = doc.get("arguments")
    if not isinstance(args, dict):
        raise r.fail(["arguments"], "expected a mapping with 'actions'")
    return args, ["arguments"]


def _completion_mode(r: _Reader, props: Any, path: list[str | int]) -> str:
    if props is None:
        return INDIVIDUAL
    if not isinstance(props, dict):
        raise r.fail(path, "expected a mapping")
    for key in props:
        if key != "completion-mode":
            raise r.fail([*path, str(key)], "unknown key (expected 'completion-mode')")
    mode = props.get("completion-mode", INDIVIDUAL)
    if mode not in COMPLETION_MODES:
        raise r.fail([*path, "completion-mode"], f"must be 'individual' or 'grouped', not {mode!r}")
    return str(mode)


def _action(r: _Reader, raw: Any, p: list[str | int]) -> Action:
    """One ``{type, data}`` entry, its data checked against what QEMU takes for the type."""
    if not isinstance(raw, dict):
        raise r.fail(p, "expected a mapping {type, data}")
    for key in raw:
        if key not in ("type", "data"):
            raise r.fail([*p, str(key)], "unknown key (expected 'type' and 'data')")
    atype = raw.get("type")
    if not isinstance(atype, str):
        raise r.fail([*p, "type"], "missing or not a string")
    if atype not in KNOWN_TYPES:
        raise r.fail([*p, "type"], f"unknown action type {atype!r}")
    data = raw.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise r.fail([*p, "data"], "expected a mapping")
    if DATA_KEYS.get(atype) is not None:
        _check_data(r, atype, data, [*p, "data"])
    return Action(atype, dict(data))


def _check_data(r: _Reader, atype: str, data: dict[str, Any], p: list[str | int]) -> None:
    keys = DATA_KEYS[atype]
    for key, value in data.items():
        if key not in keys:
            raise r.fail([*p, str(key)], f"unknown key for {atype}")
        want = keys[key]
        ok = not (isinstance(value, bool) and want is int) and isinstance(value, want)
        if not ok:
            raise r.fail([*p, str(key)], f"expected {_type_name(want)}")
    for key in REQUIRED_KEYS.get(atype, ()):
        if key not in data:
            raise r.fail(p, f"{atype} needs '{key}'")
    if atype == "block-dirty-bitmap-merge":
        for j, src in enumerate(data["bitmaps"]):
            if isinstance(src, str):
                continue
            if not (isinstance(src, dict) and set(src) == {"node", "name"}
                    and all(isinstance(v, str) for v in src.values())):
                raise r.fail([*p, "bitmaps", j], "expected a bitmap name or {node, name}")


def _first_line(exc: BaseException) -> str:
    # PyYAML's messages span several lines (position, context); errors here are one line.
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def loads(text: str, source: str = "<transaction>") -> Transaction:
    """Parse YAML (or JSON) text into a :class:`Transaction`."""
    try:
        loader = BoundedLoader(text)
        root = loader.get_single_node()
        doc = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{line}: not valid YAML: {exc.problem or _first_line(exc)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_first_line(exc)}") from None
    return parse_document(doc, source, root)


def load(path: str | Path) -> Transaction:
    """Load a transaction file (raises ConfigError with one line on any problem)."""
    p = Path(path)
    return loads(read_limited(p, "transaction"), str(p))


def dumps(txn: Transaction) -> str:
    """YAML text in the file shape (always names the completion mode)."""
    return yaml.safe_dump(txn.to_document(), sort_keys=False, default_flow_style=False)


def save(txn: Transaction, path: str | Path) -> None:
    Path(path).write_text(dumps(txn), encoding="utf-8")
