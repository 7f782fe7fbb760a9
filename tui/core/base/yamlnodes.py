"""YAML read as a node tree, so every value keeps the line it came from.

``yaml.safe_load`` forgets where a value was; an operator editing a config, theme or transaction
file needs "file, key, line" in the message. :func:`load_nodes` composes the document with
PyYAML's safe loader (no arbitrary tags) and :class:`Reader` walks it, turning any wrong key, type
or value into one :class:`~tui.core.base.errors.ConfigError` that names all three.
"""

from __future__ import annotations

import difflib
import os
import reprlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tui.core.base.errors import ConfigError
from tui.core.base.limits import TEXT_FILE_MAX_BYTES, YAML_EXPANDED_VALUES_MAX
from tui.core.base.text import shown

_TYPE_WORDS = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping (key: value)",
}


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


#: How an error message shows a value: a few items and characters, never the whole value.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel = _SHORT.maxlist = _SHORT.maxdict = 3


def read_limited(path: Path, what: str) -> str:
    """The text of ``path``, reading at most one byte past :data:`TEXT_FILE_MAX_BYTES`; a longer
    file (or an endless one such as ``/dev/zero``) is one ConfigError, not a read of it all."""
    try:
        with path.open("rb") as f:
            data = f.read(TEXT_FILE_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{what} file {path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > TEXT_FILE_MAX_BYTES:
        raise ConfigError(f"{what} file {path}: larger than {TEXT_FILE_MAX_BYTES} bytes; "
                          f"is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {path}: cannot read it: {exc.reason} "
                          f"at byte {exc.start}") from None


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a document whose aliases would expand it past
    :data:`YAML_EXPANDED_VALUES_MAX` values (an alias bomb), or that refers to itself. The
    count is kept while composing: an alias adds the size of what it repeats."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._expanded: dict[int, int] = {}
        self._values = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        is_alias = self.check_event(yaml.AliasEvent)
        node = super().compose_node(parent, index)
        if node is None:
            return None
        size = self._expanded.get(id(node)) if is_alias else self._size_of(node)
        if size is None:  # the alias names a node still being composed: it holds itself
            raise yaml.YAMLError("an alias refers to the value that holds it")
        self._values += 1 if not is_alias else size
        if self._values > YAML_EXPANDED_VALUES_MAX:
            raise yaml.YAMLError(f"aliases expand it past {YAML_EXPANDED_VALUES_MAX} values")
        return node

    def _size_of(self, node: Node) -> int:
        """How many values ``node`` stands for once every alias in it is expanded."""
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        size = 1 + sum(self._expanded.get(id(c), 1) for c in children)
        self._expanded[id(node)] = size
        return size


def load_nodes(path: Path, what: str = "config") -> tuple[Node | None, Reader]:
    """Parse ``path`` into a node tree (None for an empty file) and a :class:`Reader` for it."""
    text = read_limited(path, what)
    try:
        loader = BoundedLoader(text)
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "not valid YAML"
        raise ConfigError(f"{path}{line}: not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    except yaml.reader.ReaderError as exc:
        lineno = text.count("\n", 0, max(exc.position, 0)) + 1
        raise ConfigError(
            f"{path}:{lineno}: not valid YAML: character {exc.character!r} is not allowed"
        ) from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML: {first}") from None
    return node, Reader(path, loader)


class Reader:
    """Typed access to a composed YAML tree; every failure is one ConfigError with file:line."""

    def __init__(self, path: Path, loader: BoundedLoader) -> None:
        self.path = path
        self._loader = loader

    # ------------------------------------------------------------------ errors

    def fail(self, node: Node | None, key: str, message: str) -> NoReturn:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        where = f" {key}:" if key else ""
        text = f"{self.path}{line}:{where} {message}"
        if not text.isprintable():  # a key or value with a newline/control character in it
            text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
        raise ConfigError(text)

    # ------------------------------------------------------------------ values

    def value(self, node: Node, key: str) -> Any:
        """The plain Python value of a node (tags resolved by the safe loader)."""
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.fail(node, key, f"cannot read this value: {exc.problem or exc.context}")
        except RecursionError:
            self.fail(node, key, "cannot read this value: nested too deeply")
        except yaml.YAMLError as exc:
            self.fail(node, key, f"cannot read this value: {str(exc).splitlines()[0]}")

    def mapping(
        self,
        node: Node | None,
        key: str,
        allowed: set[str] | None = None,
        required: tuple[str, ...] = (),
        owner: Node | None = None,
    ) -> dict[str, tuple[Node, Node]]:
        """A mapping's entries as ``{key: (key_node, value_node)}``; unknown/duplicate keys fail.

        ``owner`` (the key node naming this mapping) is where a missing required key is reported.
        """
        if node is None:
            out: dict[str, tuple[Node, Node]] = {}
        elif not isinstance(node, MappingNode):
            self.fail(node, key, f"expected a mapping (key: value), got {self._node_kind(node)}")
        else:
            out = {}
            for knode, vnode in node.value:
                k = self.value(knode, key)
                if not isinstance(k, str) or not k:
                    self.fail(knode, key, f"keys must be non-empty strings, got {k!r}")
                sub = f"{key}.{k}" if key else k
                if k in out:
                    self.fail(knode, sub, "duplicate key")
                if allowed is not None and k not in allowed:
                    hint = difflib.get_close_matches(k, sorted(allowed), n=1)
                    tip = f" (did you mean '{hint[0]}'?)" if hint else ""
                    self.fail(knode, sub, f"unknown key{tip}; known keys: {', '.join(sorted(allowed))}")
                out[k] = (knode, vnode)
        for req in required:
            if req not in out:
                self.fail(owner or node, key, f"missing required key '{req}'")
        return out

    def items(self, node: Node, key: str) -> Iterator[tuple[int, Node]]:
        if not isinstance(node, SequenceNode):
            self.fail(node, key, f"expected a list, got {self._node_kind(node)}")
        yield from enumerate(node.value)

    def typed(self, node: Node, key: str, want: type | tuple[type, ...]) -> Any:
        """A scalar of the wanted type (int accepted where a float is wanted; bool never a number)."""
        wants = want if isinstance(want, tuple) else (want,)
        v = self.value(node, key)
        ok = any(
            isinstance(v, w) and not (w in (int, float) and isinstance(v, bool)) for w in wants
        ) or (float in wants and isinstance(v, int) and not isinstance(v, bool))
        if not ok:
            words = " or ".join(_TYPE_WORDS.get(w, w.__name__) for w in wants)
            self.fail(node, key, f"expected {words}, got {_kind(v)} {shown(_SHORT.repr(v), 120)}")
        return float(v) if float in wants and int not in wants and isinstance(v, int) else v

    def string(self, node: Node, key: str, *, nonempty: bool = True) -> str:
        s: str = self.typed(node, key, str)
        if nonempty and not s.strip():
            self.fail(node, key, "must not be empty")
        return s

    def number(
        self, node: Node, key: str, *, minimum: float | None = None, maximum: float | None = None
    ) -> float:
        v = float(self.typed(node, key, float))
        if minimum is not None and v < minimum:
            self.fail(node, key, f"must be at least {minimum:g}, got {v:g}")
        if maximum is not None and v > maximum:
            self.fail(node, key, f"must be at most {maximum:g}, got {v:g}")
        return v

    def boolean(self, node: Node, key: str) -> bool:
        return bool(self.typed(node, key, bool))

    def choice(self, node: Node, key: str, choices: tuple[str, ...]) -> str:
        s = self.string(node, key)
        if s not in choices:
            self.fail(node, key, f"must be one of {', '.join(choices)}; got '{s}'")
        return s

    def strings(self, node: Node, key: str) -> list[str]:
        """A list of non-empty strings; a single string counts as a list of one."""
        if isinstance(node, ScalarNode):
            return [self.string(node, key)]
        return [self.string(item, f"{key}[{i}]") for i, item in self.items(node, key)]

    def file_path(self, node: Node, key: str) -> Path:
        """A path; ``~`` and ``$VARS`` are expanded, a relative path is relative to the file."""
        raw = self.string(node, key)
        p = Path(os.path.expandvars(os.path.expanduser(raw)))
        return p if p.is_absolute() else (self.path.parent / p)

    def checked(self, node: Node, key: str, fn: Callable[[Any], Any], value: Any) -> Any:
        """``fn(value)``, turning a ValueError (or ConfigError) into this node's error line."""
        try:
            return fn(value)
        except (ValueError, ConfigError) as exc:
            self.fail(node, key, str(exc))

    @staticmethod
    def _node_kind(node: Node) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        return f"the value {node.value!r}" if node.value != "" else "nothing (null)"
