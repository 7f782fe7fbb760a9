"""Fuzzing (hypothesis, bounded for CI): the reducer, the reply parsers, addresses, the transport
options and the transaction/config loaders fed random and malformed input.

Nothing may escape as an exception except the typed one-line errors, and the state's invariants
hold after any sequence of events and poll results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kit.common import SAMPLES
from tui.core.base.errors import AddressError, BitmapTuiError, ConfigError, LedgerError
from tui.core.model import reducer
from tui.core.model.parse import parse_bitmap, parse_jobs, parse_nodes, parse_version
from tui.core.model.serialize import fleet_dict
from tui.core.model.state import BitmapState, ConnectionModel, FleetState, JobResult, LinkState
from tui.core.model.store import Store
from tui.core.qmp.address import parse_address, parse_address_lenient
from tui.core.qmp.transport import ssh_argv, tls_context

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# Per-sample file fuzzing: several samples each, so fewer examples per sample.
FUZZ_FILES = settings(FUZZ, max_examples=60)

# Field names QEMU uses, so random documents reach the interesting branches.
KEYS = [
    "event", "data", "timestamp", "seconds", "microseconds", "device", "id", "type", "status",
    "len", "offset", "speed", "error", "operation", "action", "node-name", "drv", "file", "image",
    "virtual-size", "dirty-bitmaps", "name", "granularity", "count", "recording", "busy",
    "persistent", "inconsistent", "inserted", "total-progress", "current-progress", "paused",
    "qemu", "major", "minor", "micro", "package", "ro",
]
JOB_IDS = st.sampled_from(["j0", "j1", "drive0", ""])
EVENTS = sorted(reducer.JOB_EVENTS) + ["BLOCK_IO_ERROR", "SHUTDOWN", "X"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=8), st.sampled_from(["running", "concluded", "null", "paused", "backup",
                                          "active", "frozen", "locked", "disabled", "j0", "disk0"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=4)), inner, max_size=6),
    ),
    max_leaves=25,
)
numbers = st.one_of(st.integers(-(2**40), 2**40), st.none(), st.booleans(), st.text(max_size=3))


@st.composite
def job_events(draw: Any) -> dict[str, Any]:
    """Mostly well-formed job events with hostile values, sometimes anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return dict(draw(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4)))
    name = draw(st.sampled_from(EVENTS))
    data = {
        "device": draw(JOB_IDS), "id": draw(JOB_IDS), "type": draw(st.sampled_from(["backup", 3, None])),
        "status": draw(st.sampled_from(["created", "running", "paused", "ready", "pending",
                                         "concluded", "null", "aborting", 7])),
        "len": draw(numbers), "offset": draw(numbers), "speed": draw(numbers),
        "error": draw(st.one_of(st.none(), st.text(max_size=6), st.integers())),
        "operation": draw(st.sampled_from(["read", "write", None])),
        "action": draw(st.sampled_from(["report", "stop", "ignore", 1])),
    }
    keep = draw(st.sets(st.sampled_from(sorted(data)), max_size=len(data)))
    event: dict[str, Any] = {"event": name, "data": {k: data[k] for k in keep}}
    if draw(st.booleans()):
        event["timestamp"] = draw(st.one_of(
            json_values, st.fixed_dictionaries({"seconds": numbers, "microseconds": numbers})))
    return event


@st.composite
def job_polls(draw: Any) -> tuple[Any, Any]:
    def one(id_key: str) -> Any:
        return draw(st.one_of(
            json_values,
            st.fixed_dictionaries({
                id_key: JOB_IDS, "type": st.sampled_from(["backup", "create"]),
                "status": st.sampled_from(["running", "concluded", "null", "paused", "ready"]),
                "total-progress": numbers, "current-progress": numbers, "len": numbers,
                "offset": numbers, "speed": numbers, "paused": st.booleans(),
                "error": st.one_of(st.none(), st.text(max_size=5)),
            }),
        ))

    qjobs = draw(st.one_of(json_values, st.lists(st.just(0), max_size=3).map(lambda x: [one("id") for _ in x])))
    qblock = draw(st.one_of(json_values, st.lists(st.just(0), max_size=3).map(lambda x: [one("device") for _ in x])))
    return qjobs, qblock


@st.composite
def bitmaps(draw: Any) -> Any:
    return draw(st.one_of(
        json_values,
        st.fixed_dictionaries({}, optional={
            "name": st.one_of(st.none(), st.sampled_from(["", "b0", "b1"]), st.integers()),
            "granularity": numbers, "count": numbers, "recording": scalars, "busy": scalars,
            "persistent": scalars, "inconsistent": scalars,
            "status": st.sampled_from(["active", "disabled", "frozen", "locked", "inconsistent", 1]),
        }),
    ))


@st.composite
def node_polls(draw: Any) -> tuple[Any, Any]:
    named = draw(st.lists(st.one_of(json_values, st.fixed_dictionaries({
        "node-name": st.sampled_from(["disk0", "disk1", "#block1", "", None]),
        "drv": st.sampled_from(["qcow2", "raw", "copy-before-write", None]),
        "file": st.sampled_from(["a.qcow2", "b.qcow2", ""]),
        "image": st.one_of(json_values, st.fixed_dictionaries({"virtual-size": numbers})),
        "dirty-bitmaps": st.one_of(json_values, st.lists(bitmaps(), max_size=3)),
        "ro": scalars,
    })), max_size=4))
    block = draw(st.lists(st.one_of(json_values, st.fixed_dictionaries({
        "device": st.sampled_from(["drive0", "", None]),
        "inserted": st.one_of(json_values, st.fixed_dictionaries({
            "node-name": st.sampled_from(["disk0", "disk9", "#block1", None]),
            "file": st.sampled_from(["a.qcow2", "zz", None]), "drv": st.sampled_from(["qcow2", 1]),
        })),
        "dirty-bitmaps": st.one_of(json_values, st.lists(bitmaps(), max_size=2)),
    })), max_size=3))
    return (named if draw(st.booleans()) else draw(json_values)), block


def check_invariants(conn: ConnectionModel) -> None:
    for key, job in conn.jobs.items():
        assert key == job.id and isinstance(job.id, str) and job.id
        assert job.total >= 0 and job.current >= 0 and job.speed >= 0
        if job.total > 0:
            assert job.current <= job.total, job
        assert 0.0 <= job.progress <= 1.0
        assert isinstance(job.status, str)
        assert job.result is None or isinstance(job.result, JobResult)
        if job.result is JobResult.LOST:
            assert job.error
    for key, node in conn.nodes.items():
        assert key == node.node_name
        names = [b.name for b in node.bitmaps if b.name is not None]
        for bm in node.bitmaps:
            states = [s for s in BitmapState if s is bm.state]
            assert len(states) == 1  # exactly one displayed state
            assert bm.granularity >= 0 and bm.count >= 0
            if bm.inconsistent:
                assert bm.state is BitmapState.INCONSISTENT and not bm.busy and not bm.recording
            assert bm.name is None or (isinstance(bm.name, str) and bm.name)
        assert all(isinstance(n, str) for n in names)
    # Whatever happened, the status JSON can be produced and written.
    json.dumps(fleet_dict(FleetState({conn.name: conn})))


# ------------------------------------------------------------------ the model


operations = st.one_of(
    job_events().map(lambda e: ("event", e)),
    job_polls().map(lambda p: ("jobs", p)),
    node_polls().map(lambda p: ("nodes", p)),
    st.sampled_from(list(LinkState)).map(lambda s: ("link", s)),
    JOB_IDS.map(lambda j: ("dismiss", j)),
)


@FUZZ
@given(ops=st.lists(operations, max_size=25))
def test_reducer_survives_any_sequence_and_keeps_invariants(ops: list[tuple[str, Any]]) -> None:
    conn = ConnectionModel(name="vm0", address="unix:/x")
    conn = reducer.link_changed(conn, LinkState.CONNECTED, None)
    for kind, arg in ops:
        if kind == "event":
            conn = reducer.reduce_event(conn, arg)
            reducer.event_record("vm0", arg, 0.0)
        elif kind == "jobs":
            conn = reducer.apply_jobs(conn, parse_jobs(*arg))
        elif kind == "nodes":
            conn = reducer.apply_nodes(conn, parse_nodes(*arg))
        elif kind == "link":
            conn = reducer.link_changed(conn, arg, "x" if arg is not LinkState.CONNECTED else None)
        else:
            conn = reducer.dismiss_job(conn, arg)
        check_invariants(conn)


@FUZZ
@given(ops=st.lists(operations, max_size=25))
def test_losing_the_link_never_leaves_a_running_job_trusted(ops: list[tuple[str, Any]]) -> None:
    conn = reducer.link_changed(ConnectionModel(name="vm0", address="x"), LinkState.CONNECTED, None)
    for kind, arg in ops:
        if kind == "event":
            conn = reducer.reduce_event(conn, arg)
        elif kind == "jobs":
            conn = reducer.apply_jobs(conn, parse_jobs(*arg))
    lost = reducer.link_changed(conn, LinkState.DISCONNECTED, "connection lost: x")
    for job in lost.jobs.values():
        assert job.finished
        if not conn.jobs[job.id].finished:
            assert job.result is JobResult.LOST and job.error


@FUZZ
@given(events=st.lists(st.one_of(job_events(), json_values), max_size=30))
def test_store_accepts_anything_qemu_qmp_could_deliver(events: list[Any]) -> None:
    store = Store(event_log_size=10)
    store.add_connection("vm0", "unix:/x")
    for ev in events:
        if isinstance(ev, dict):  # qemu.qmp only delivers JSON objects as events
            store.apply_event("vm0", ev)
    assert len(store.events) <= 10
    check_invariants(store.connection("vm0"))


@FUZZ
@given(raw=json_values, bm=bitmaps())
def test_parsers_take_any_json(raw: Any, bm: Any) -> None:
    parse_version(raw)
    parse_nodes(raw, raw)
    parse_jobs(raw, raw)
    if isinstance(bm, dict):
        b = parse_bitmap(bm)
        assert b.state in set(BitmapState)


# ------------------------------------------------------------------ addresses and transports


address_texts = st.one_of(
    st.text(max_size=40),
    st.builds(lambda user, host, port, path: f"ssh://{user}{host}{port}{path}",
              st.sampled_from(["", "root@", "-oProxyCommand=x@", "a b@"]),
              st.sampled_from(["h", "-oProxyCommand=touch", "[::1]", "host.example", "-h", ""]),
              st.sampled_from(["", ":22", ":0", ":99999", ":x"]),
              st.sampled_from(["/q.sock", "/a:b.sock", "", "/", "/x y"])),
    st.builds(lambda p, h, port: f"{p}{h}:{port}", st.sampled_from(["", "tcp:"]),
              st.sampled_from(["1.2.3.4", "[::1]", "localhost", "-x", "a/b"]),
              st.integers(-5, 70000)),
)


@FUZZ
@given(text=address_texts)
def test_addresses_parse_or_fail_in_one_line(text: str) -> None:
    lenient = parse_address_lenient(text)
    try:
        addr = parse_address(text)
    except AddressError as exc:
        assert "\n" not in str(exc) and lenient.kind == "invalid" and lenient.error == str(exc)
        return
    assert addr.kind in ("unix", "tcp", "ssh") and addr == lenient
    if addr.kind == "ssh":
        try:
            argv = ssh_argv(addr, "/tmp/l.sock", {})
        except AddressError as exc:
            assert ":" in addr.path and "\n" not in str(exc)
            return
        # Whatever the URL held, the host is a single argument after "--": never an ssh option.
        assert argv[-2] == "--" and argv[-1] == addr.host
        assert argv[argv.index("-L") + 1] == f"/tmp/l.sock:{addr.path}"
        if addr.user:
            assert argv[argv.index("-l") + 1] == addr.user


@FUZZ
@given(opts=st.dictionaries(st.sampled_from(["tls_ca", "tls_cert", "tls_key", "ssh_options",
                                             "ssh_config", "allow_insecure_tcp"]),
                            st.one_of(json_values, st.just("/nonexistent/ca.pem")), max_size=4))
def test_transport_options_fail_as_config_errors(opts: dict[str, Any]) -> None:
    try:
        tls_context(opts)
        ssh_argv(parse_address("ssh://h/q.sock"), "/tmp/l.sock", opts)
    except ConfigError as exc:
        assert "\n" not in str(exc)


# ------------------------------------------------------------------ files


def _mutations(doc: Any) -> st.SearchStrategy[Any]:
    """Replace, drop or retype random parts of a valid document."""
    if isinstance(doc, dict) and doc:
        return st.one_of(
            json_values,
            st.tuples(st.sampled_from(sorted(doc)), st.deferred(lambda: json_values)).map(
                lambda kv: {**doc, kv[0]: kv[1]}),
            st.sampled_from(sorted(doc)).flatmap(
                lambda k: _mutations(doc[k]).map(lambda v: {**doc, k: v})),
            st.sampled_from(sorted(doc)).map(lambda k: {kk: vv for kk, vv in doc.items() if kk != k}),
        )
    if isinstance(doc, list) and doc:
        return st.one_of(
            json_values,
            st.integers(0, len(doc) - 1).flatmap(
                lambda i: _mutations(doc[i]).map(lambda v: [*doc[:i], v, *doc[i + 1:]])),
            st.just(doc[:-1]),
            st.just(doc + doc[:1]),
        )
    return st.one_of(st.just(doc), json_values)


TXN_SAMPLES = sorted(SAMPLES.glob("txn-*.yaml"))
CONFIG_SAMPLES = sorted(SAMPLES.glob("config-*.yaml"))


@pytest.mark.skipif(not TXN_SAMPLES, reason="no transaction samples")
@pytest.mark.parametrize("sample", TXN_SAMPLES, ids=lambda p: p.name)
def test_transaction_loader_on_mutated_samples(sample: Path) -> None:
    from tui.core.txn.files import loads

    doc = yaml.safe_load(sample.read_text())

    @FUZZ_FILES
    @given(mutated=_mutations(doc))
    def check(mutated: Any) -> None:
        try:
            loads(yaml.safe_dump(mutated), "t.yaml")
        except ConfigError as exc:
            assert "\n" not in str(exc), str(exc)

    check()


@FUZZ
@given(text=st.one_of(st.text(max_size=120), st.binary(max_size=80).map(
    lambda b: b.decode("latin-1"))))
def test_transaction_loader_on_random_text(text: str) -> None:
    from tui.core.txn.files import loads

    try:
        loads(text, "t.yaml")
    except ConfigError as exc:
        assert "\n" not in str(exc), str(exc)


@pytest.mark.skipif(not CONFIG_SAMPLES, reason="no config samples")
@pytest.mark.parametrize("sample", CONFIG_SAMPLES, ids=lambda p: p.name)
def test_config_loader_on_mutated_samples_down_to_the_fleet(sample: Path, tmp_path: Path) -> None:
    """Mutated real configs: either one ConfigError line, or endpoints a Fleet accepts whose
    transport options either work or fail as one line."""
    from tui.core.config import load_config
    from tui.core.qmp.fleet import Fleet

    doc = yaml.safe_load(sample.read_text())
    path = tmp_path / "config.yaml"

    @FUZZ_FILES
    @given(mutated=_mutations(doc))
    def check(mutated: Any) -> None:
        path.write_text(yaml.safe_dump(mutated))
        try:
            cfg = load_config(path)
            fleet = Fleet()
            for ep in cfg.endpoints():
                fleet.add(ep)
                opts = ep.options
                tls_context(opts)
                if ep.address.kind == "ssh":
                    ssh_argv(ep.address, "/tmp/l.sock", opts)
        except BitmapTuiError as exc:
            assert "\n" not in str(exc), str(exc)

    check()


# ------------------------------------------------------------------ the ledger file


@FUZZ_FILES
@given(data=st.one_of(st.binary(max_size=3000),
                      st.binary(max_size=3000).map(lambda b: b"SQLite format 3\x00" + b)))
def test_ledger_file_of_random_bytes_is_one_line(tmp_path: Path, data: bytes) -> None:
    """A corrupt or foreign ledger file: one LedgerError line, the file left untouched."""
    from tui.core.ledger.repository import Ledger

    path = tmp_path / "ledger.db"
    for leftover in tmp_path.glob("ledger.db*"):
        leftover.unlink()
    path.write_bytes(data)
    try:
        Ledger(path).close()
    except LedgerError as exc:
        assert str(exc).startswith(f"ledger {path}: ") and "\n" not in str(exc)
        assert path.read_bytes() == data


def test_cli_with_a_corrupt_ledger_says_so_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "ledger.db"
    bad.write_bytes(b"\x00\xffnot a database at all" * 100)
    res = subprocess.run([sys.executable, "-m", "tui", "chains", "--ledger", str(bad)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2
    assert res.stderr.strip() == f"bitmap-tui: ledger {bad}: file is not a database"
