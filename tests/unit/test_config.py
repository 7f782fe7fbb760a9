"""Config loading: samples load, values land in typed models, every mistake names file:line key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.kit.common import ROOT
from tui.core.base.errors import ConfigError
from tui.core.base.paths import default_config_path, user_themes_dir
from tui.core.config import (
    Config,
    Policy,
    check_pattern,
    load_config,
)
from tui.core.qmp.fleet import Endpoint

SAMPLES = sorted((ROOT / "sample-configs").glob("config-*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def error_of(tmp_path: Path, text: str) -> str:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert "\n" not in msg, "a config error is one line"
    return msg


def test_there_are_samples():
    assert len(SAMPLES) >= 3


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_config_loads_and_is_documented(path: Path):
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.path == path
    text = path.read_text()
    # "each sample is documented by comments in the file"
    assert text.lstrip().startswith("#") and text.count("#") >= 3


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
async def test_sample_config_endpoints_are_accepted_by_the_fleet(path: Path):
    """Every option a sample sets (TLS files, ssh options, allow_insecure_tcp) is one the
    transport takes: a Fleet is built from them without starting anything."""
    from tui.core.qmp.fleet import Fleet

    cfg = load_config(path)
    fleet = Fleet()
    for ep in cfg.endpoints():
        fleet.add(ep)
    assert list(fleet.connections) == [c.name for c in cfg.connections]


def test_full_config_values(tmp_path):
    p = write(
        tmp_path,
        """
        defaults:
          refresh_interval: 1          # int accepted as a number
          read_only: true
          theme: light
          connect_timeout: 2.5
          audit_log: logs/audit.jsonl  # relative to the config file
        connections:
          a: unix:/run/a.qmp
          b:
            address: tcp:localhost:4444
            tags: [x, y]
          c:
            address: ssh://me@host/run/c.qmp
            tags: solo
            ssh:
              config: /etc/bt/ssh_config
              options: [ConnectTimeout=5]
        keymap:
          quit: "q, ctrl+q"
          help: [f1, question_mark]
        policies:
          p1:
            connection: a
            drives: [drive0, drive1]
            bitmap: nightly
            target_dir: /srv/b
          p2:
            connection: b
            drives: drive0
            bitmap: hourly
            target_dir: /srv/c
            pattern: "{drive}-{timestamp}.img"
            format: qcow2
            completion_mode: grouped
        """,
    )
    cfg = load_config(p)
    d = cfg.defaults
    assert (d.refresh_interval, d.read_only, d.theme, d.connect_timeout) == (1.0, True, "light", 2.5)
    assert isinstance(d.refresh_interval, float)
    assert cfg.audit_path() == tmp_path / "logs" / "audit.jsonl"
    assert [c.name for c in cfg.connections] == ["a", "b", "c"]
    assert cfg.connection("b").tags == ("x", "y") and cfg.connection("c").tags == ("solo",)
    assert cfg.connection("c").address.kind == "ssh" and cfg.connection("c").address.user == "me"
    assert cfg.connection("b").line == 9
    assert cfg.connection("c").ssh_config == Path("/etc/bt/ssh_config")
    assert cfg.connection("c").ssh_options == ("ConnectTimeout=5",)
    assert cfg.keymap == {"quit": "q,ctrl+q", "help": "f1,question_mark"}
    p1, p2 = cfg.policies["p1"], cfg.policies["p2"]
    assert p1 == Policy("p1", "a", ("drive0", "drive1"), "nightly", "/srv/b")
    assert p1.file_name(drive="drive0", kind="incr", n=3) == "drive0-incr-3.qcow2"
    assert (p2.format, p2.completion_mode, p2.drives) == ("qcow2", "grouped", ("drive0",))
    assert p2.file_name(drive="d", kind="full", n=1, timestamp="20260101T0000") == "d-20260101T0000.img"


@pytest.mark.parametrize("fmt, why", [
    ("raw", "raw cannot be used: only qcow2 can hold an incremental chain"),
    ("vmdk", "must be one of qcow2; got 'vmdk'"),
])
def test_policy_format_must_be_qcow2(tmp_path, fmt, why):
    # The planner refuses anything but qcow2 (no backing file, no chain): say so at load time.
    p = write(tmp_path, "connections:\n  a: unix:/x.qmp\npolicies:\n  p:\n    connection: a\n"
              "    drives: [drive0]\n    bitmap: b\n    target_dir: /srv\n"
              f"    format: {fmt}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}:9: policies.p.format: ") and why in msg and "\n" not in msg


def test_endpoints_interface(tmp_path):
    cfg = load_config(write(tmp_path, "connections:\n  one: unix:/x/one.qmp\n  two: /y/two.sock\n"))
    eps = cfg.endpoints()
    assert all(isinstance(e, Endpoint) for e in eps)
    assert [(e.name, e.address.kind, e.address.path) for e in eps] == [
        ("one", "unix", "/x/one.qmp"),
        ("two", "unix", "/y/two.sock"),
    ]
    assert eps[0].options == {}


def test_empty_file_is_empty_config(tmp_path):
    cfg = load_config(write(tmp_path, "# nothing yet\n"))
    assert cfg.connections == () and cfg.endpoints() == [] and cfg.defaults.theme == "dark"


def test_default_location_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_config_path() == tmp_path / "xdg" / "bitmap-tui" / "config.yaml"
    assert user_themes_dir() == tmp_path / "xdg" / "bitmap-tui" / "themes"
    # missing default file: not an error
    assert load_config(None).connections == ()
    default_config_path().parent.mkdir(parents=True)
    default_config_path().write_text("connections:\n  z: unix:/z.qmp\n")
    assert [c.name for c in load_config(None).connections] == ["z"]
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_config_path() == tmp_path / "home" / ".config" / "bitmap-tui" / "config.yaml"


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


# Each case: YAML text, then what the one-line message must contain (line, key, reason).
ERRORS = {
    "unknown top key": (
        "connections: {}\nconection: {}\n",
        [":2: conection: unknown key (did you mean 'connections'?)"],
    ),
    "unknown defaults key": (
        "defaults:\n  theme: dark\n  refesh_interval: 3\n",
        [":3: defaults.refesh_interval: unknown key (did you mean 'refresh_interval'?)"],
    ),
    "wrong type": (
        "defaults:\n  refresh_interval: fast\n",
        [":2: defaults.refresh_interval: expected a number, got a string 'fast'"],
    ),
    "bool is not a number": (
        "defaults:\n  connect_timeout: true\n",
        [":2: defaults.connect_timeout: expected a number"],
    ),
    "number out of range": (
        "defaults:\n  refresh_interval: 0\n",
        [":2: defaults.refresh_interval: must be at least 0.1"],
    ),
    "read_only not bool": (
        "defaults:\n  read_only: 'yes'\n",
        [":2: defaults.read_only: expected true or false, got a string 'yes'"],
    ),
    "bad address": (
        "connections:\n  a: unix:/ok.qmp\n  b:\n    address: tcp:host\n",
        [":4: connections.b.address: bad address 'tcp:host'"],
    ),
    "address missing": (
        "connections:\n  a:\n    tags: [x]\n",
        [":2: connections.a: missing required key 'address'"],
    ),
    "duplicate connection": (
        "connections:\n  a: unix:/a.qmp\n  a: unix:/b.qmp\n",
        [":3: connections.a: duplicate key"],
    ),
    "connections as a list": (
        "connections:\n  - unix:/a.qmp\n",
        [":2: connections: expected a mapping (key: value), got a list"],
    ),
    "insecure tcp": (
        "connections:\n  far:\n    address: tcp:10.1.2.3:4444\n",
        [":3: connections.far.address: plaintext TCP to non-loopback host 10.1.2.3", "allow_insecure_tcp"],
    ),
    "tls on unix": (
        "connections:\n  a:\n    address: unix:/a.qmp\n    tls:\n      ca: /ca.pem\n",
        [":4: connections.a.tls: TLS applies to tcp: addresses, not unix"],
    ),
    "tls cert without key": (
        "connections:\n  a:\n    address: tcp:h.example:1\n    tls:\n      ca: /ca.pem\n      cert: /c.pem\n",
        [":4: connections.a.tls: cert and key go together"],
    ),
    "ssh on unix": (
        "connections:\n  a:\n    address: /a.sock\n    ssh:\n      config: ~/.ssh/config\n",
        [":4: connections.a.ssh: ssh options apply to ssh:// addresses, not unix"],
    ),
    "ssh bad option": (
        "connections:\n  a:\n    address: ssh://h/a.sock\n    ssh:\n      options: [BatchMode yes]\n",
        [":5: connections.a.ssh.options: 'BatchMode yes' is not Key=Value"],
    ),
    "bad key spec": (
        "keymap:\n  quit: [q, 'crtl+q']\n",
        [":2: keymap.quit: key 'crtl+q': modifiers are"],
    ),
    "policy unknown connection": (
        "connections:\n  vm1: /a.sock\npolicies:\n  p:\n    connection: vm9\n    drives: [d0]\n"
        "    bitmap: b\n    target_dir: /srv\n",
        [":5: policies.p.connection: no connection named 'vm9' (known: vm1)"],
    ),
    "policy missing key": (
        "connections:\n  vm1: /a.sock\npolicies:\n  p:\n    connection: vm1\n    drives: [d0]\n",
        [":4: policies.p: missing required key 'target_dir'"],
    ),
    "policy bad mode": (
        "connections:\n  vm1: /a.sock\npolicies:\n  p:\n    connection: vm1\n    drives: [d0]\n"
        "    bitmap: b\n    target_dir: /srv\n    completion_mode: together\n",
        [":9: policies.p.completion_mode: must be one of individual, grouped; got 'together'"],
    ),
    "policy pattern field": (
        "connections:\n  vm1: /a.sock\npolicies:\n  p:\n    connection: vm1\n    drives: [d0]\n"
        "    bitmap: b\n    target_dir: /srv\n    pattern: '{disk}-{n}.qcow2'\n",
        [":9: policies.p.pattern: unknown field {disk} in pattern"],
    ),
    "policy pattern without drive": (
        "connections:\n  vm1: /a.sock\npolicies:\n  p:\n    connection: vm1\n    drives: [d0, d1]\n"
        "    bitmap: b\n    target_dir: /srv\n    pattern: 'x-{kind}-{n}.qcow2'\n",
        [":9: policies.p.pattern: the pattern needs {drive}"],
    ),
    "policy relative target": (
        "connections:\n  vm1: /a.sock\npolicies:\n  p:\n    connection: vm1\n    drives: d0\n"
        "    bitmap: b\n    target_dir: backups\n",
        [":8: policies.p.target_dir: must be an absolute path on the QEMU host"],
    ),
    "policy drive twice": (
        "connections:\n  vm1: /a.sock\npolicies:\n  p:\n    connection: vm1\n    drives: [d0, d0]\n"
        "    bitmap: b\n    target_dir: /srv\n",
        [":6: policies.p.drives: a drive is listed twice"],
    ),
    "policy fractional speed": (
        "connections:\n  vm1: /a.sock\npolicies:\n  p:\n    connection: vm1\n    drives: d0\n"
        "    bitmap: b\n    target_dir: /srv\n    speed: 1.5\n",
        [":9: policies.p.speed: expected a whole number, got a number 1.5"],
    ),
    "policy granularity not power of two": (
        "connections:\n  vm1: /a.sock\npolicies:\n  p:\n    connection: vm1\n    drives: d0\n"
        "    bitmap: b\n    target_dir: /srv\n    granularity: 5000\n",
        [":9: policies.p.granularity: must be a power of two"],
    ),
    "yaml syntax": (
        "connections:\n  a: unix:/a.qmp\n b: [\n",
        [":3: not valid YAML"],
    ),
    "top level list": ("- a\n- b\n", [":1: expected a mapping (key: value), got a list"]),
    "arbitrary tag refused": (
        "defaults:\n  theme: !!python/object:os.system ls\n",
        [":2: defaults.theme: cannot read this value"],
    ),
}


@pytest.mark.parametrize("case", list(ERRORS), ids=list(ERRORS))
def test_config_error_names_file_key_line(tmp_path, case):
    text, expected = ERRORS[case]
    msg = error_of(tmp_path, text)
    path = str(tmp_path / "config.yaml")
    assert msg.startswith(path + ":"), msg
    for part in expected:
        assert path + part in msg or part in msg, f"{part!r} not in {msg!r}"
    # the line number is right there after the file name
    assert msg[len(path) + 1].isdigit(), msg


def test_deep_nesting_is_a_config_error(tmp_path):
    msg = error_of(tmp_path, "[" * 3000 + "\n")
    assert msg.endswith("config.yaml: not valid YAML: nested too deeply")


def test_keymap_ids_are_checked_against_the_app(tmp_path):
    cfg = load_config(write(tmp_path, "keymap:\n  app.quit: ctrl+q\n  app.hlep: f1\n"))
    cfg.check_keymap({"app.quit", "app.help", "app.hlep"})
    with pytest.raises(ConfigError) as exc:
        cfg.check_keymap({"app.quit", "app.help"})
    assert str(exc.value).startswith(
        f"{tmp_path / 'config.yaml'}:3: keymap.app.hlep: no key binding has this id "
        "(did you mean 'app.help'?)"
    )


def test_check_pattern_rules():
    assert check_pattern("{drive}-{kind}-{n}.qcow2", 2)
    assert check_pattern("{timestamp}.qcow2", 1)
    for bad in ("{drive}.qcow2", "a/{n}", "{n}-{oops}", "{n"):
        with pytest.raises(ValueError):
            check_pattern(bad, 1)


def test_tls_option_refused_until_the_transport_supports_it(tmp_path):
    """A TLS connection never silently falls back to plaintext: either the Connection takes the
    TLS options or endpoints() refuses with the config line."""
    import inspect

    from tui.core.qmp.connection import Connection

    cfg = load_config(
        write(
            tmp_path,
            "connections:\n  t:\n    address: tcp:h.example:4444\n    tls:\n      ca: /ca.pem\n",
        )
    )
    try:
        from tui.core.qmp.transport import TRANSPORT_OPTIONS
    except ImportError:
        TRANSPORT_OPTIONS = frozenset()
    if "tls_ca" in inspect.signature(Connection.__init__).parameters or "tls_ca" in TRANSPORT_OPTIONS:
        assert cfg.endpoints()[0].options["tls_ca"] == Path("/ca.pem")
    else:
        with pytest.raises(ConfigError, match=r"config.yaml:2: connections.t: option 'tls_ca'"):
            cfg.endpoints()


def test_cli_reports_config_error_in_one_line(tmp_path):
    p = write(tmp_path, "defaults:\n  theme: 3\n")
    res = subprocess.run(
        [sys.executable, "-m", "tui", "--config", str(p), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert err == [f"bitmap-tui: {p}:2: defaults.theme: expected a string, got a number 3"]
    assert "Traceback" not in res.stderr


# ---------------------------------------------------------------------------- fuzz

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["unix:/a.qmp", "tcp:1.2.3.4:5", "dark", "{n}", "q"]),
)
_keys = st.sampled_from(
    ["connections", "defaults", "keymap", "policies", "address", "tags", "tls", "ca", "cert",
     "key", "theme", "read_only", "refresh_interval", "connection", "drives", "bitmap",
     "target_dir", "pattern", "format", "completion_mode", "vm1", "p", "x"]
)
_trees = st.recursive(
    _scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                      st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_trees)
def test_fuzz_structured_config_never_escapes(tmp_path, tree):
    import yaml

    p = tmp_path / "fuzz.yaml"
    p.write_text(yaml.safe_dump(tree))
    try:
        cfg = load_config(p)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(p))
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80))
def test_fuzz_raw_text_never_escapes(tmp_path, text):
    p = tmp_path / "fuzz.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(p)
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_sample_files_follow_the_naming_convention():
    # config-*.yaml are configs (tested above); txn-*.yaml are transaction files (tested by the
    # transaction loader). Anything else there would be tested by nobody.
    names = [p.name for p in (ROOT / "sample-configs").iterdir()]
    assert names and all(n.startswith(("config-", "txn-")) and n.endswith(".yaml") for n in names)
