"""Architecture rules that must not rot: the layer contracts hold, the command line loads
Textual only for the console, nothing forms an import cycle; addresses parse."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

from tests.kit.common import ROOT
from tui.core.base.errors import AddressError
from tui.core.qmp.address import parse_address, parse_address_lenient
from tui.core.qmp.fleet import endpoints_from


def test_the_layer_contracts_hold():
    """``lint-imports`` keeps every contract of pyproject.toml: the core's layers, no Textual (nor
    the console or the command line) in the core, the demo and the composition root."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.exists(), "import-linter is in the test extra (./dev installs it)"
    res = subprocess.run([str(lint), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Contracts: {len(contracts)} kept, 0 broken." in res.stdout, res.stdout


# What the contracts cannot say: the command line imports the console (lazily, for the console
# and the demo), so only a run shows that its modules and a headless command leave Textual out.
CLI_RUN = """
import importlib, pkgutil, sys
import tui.cli
for m in pkgutil.iter_modules(tui.cli.__path__, "tui.cli."):
    importlib.import_module(m.name)
from tui.cli.main import main
main(["status", "--connect", "unix:/nonexistent/qmp.sock"])
bad = sorted(m for m in sys.modules if m.split(".")[0] == "textual" or m.startswith("tui.ui"))
assert not bad, bad
"""


def test_the_command_line_and_a_headless_command_do_not_load_textual():
    res = subprocess.run([sys.executable, "-c", CLI_RUN], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), i.e. import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def test_no_import_cycles_in_tui():
    """Function-level imports count too: a cycle hidden inside a function is still a cycle."""
    graph = grimp.build_graph("tui")
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.z", imported="a.x")
    assert _cycles(graph) == [["a.x", "a.y"]]


@pytest.mark.parametrize(
    "text,kind,where",
    [
        ("unix:/run/vm1.qmp", "unix", "/run/vm1.qmp"),
        ("/run/qemu/vm2.sock", "unix", "/run/qemu/vm2.sock"),
        ("./vm.sock", "unix", "./vm.sock"),
        ("tcp:10.0.0.5:4444", "tcp", "10.0.0.5"),
        ("localhost:4444", "tcp", "localhost"),
        ("[::1]:4444", "tcp", "::1"),
        ("ssh://admin@host.example:2222/run/vm.qmp", "ssh", "/run/vm.qmp"),
    ],
)
def test_address_forms(text, kind, where):
    a = parse_address(text)
    assert a.kind == kind
    assert where in (a.path, a.host)


@pytest.mark.parametrize("text", ["", "vm1", "tcp:nohost", "host:99999", "ssh://host", "unix:"])
def test_bad_addresses_one_line(text):
    with pytest.raises(AddressError) as err:
        parse_address(text)
    assert "\n" not in str(err.value) and str(err.value)
    assert parse_address_lenient(text).kind == "invalid"


def test_names_default_from_socket_and_are_unique():
    eps = endpoints_from(["/run/vm1.qmp", "unix:/other/vm1.qmp", "web=tcp:h:1", "127.0.0.1:4444"])
    assert [e.name for e in eps] == ["vm1", "vm1-2", "web", "127.0.0.1:4444"]
    assert parse_address("tcp:10.0.0.5:4444").is_loopback is False
    assert parse_address("127.0.0.1:1").is_loopback
