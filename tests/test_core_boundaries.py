"""Architecture rules that must not rot: the core never imports Textual; addresses parse."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tui.errors import AddressError
from tui.qmp.address import parse_address, parse_address_lenient
from tui.qmp.fleet import endpoints_from

CORE = ["tui.model", "tui.model.store", "tui.model.serialize", "tui.qmp.connection", "tui.qmp.fleet",
        "tui.cli", "tui.sandbox", "tui.audit", "tui.format"]
OPTIONAL_CORE = ["tui.config", "tui.txn", "tui.chains", "tui.ops"]


def test_core_does_not_import_textual():
    code = (
        "import importlib, sys\n"
        f"for m in {CORE!r}: importlib.import_module(m)\n"
        f"for m in {OPTIONAL_CORE!r}:\n"
        "    try: importlib.import_module(m)\n"
        "    except ModuleNotFoundError as e:\n"
        "        if e.name != m: raise\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


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
