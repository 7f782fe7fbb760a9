"""The YAML config: connections, defaults, key remapping and backup policies.

Loaded once at start into frozen dataclasses. Anything wrong (an unknown key, a wrong type, a bad
address or pattern) is one :class:`~tui.core.base.errors.ConfigError` naming the file, the key path and the
line, so the app never starts half-configured. No Textual import here: the headless commands use
the same loader.

Default location: ``$XDG_CONFIG_HOME/bitmap-tui/config.yaml`` (``~/.config`` when unset), else the
system-wide ``/etc/bitmap-tui/config.yaml`` (the service's, shared by every operator on the host).
When neither exists the config is empty; a missing file given with ``--config`` is an error.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import string
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from yaml.nodes import Node, ScalarNode

from tui.core.base.errors import ConfigError
from tui.core.base.limits import bitmap_name_problem, format_spec_problem
from tui.core.base.paths import (
    SYSTEM_CONFIG_PATH,
    default_audit_path,
    default_config_path,
    default_service_audit_path,
    default_service_socket_dir,
)
from tui.core.base.yamlnodes import Reader, load_nodes
from tui.core.chains.policy import (
    COMPLETION_MODES,
    DEFAULT_PATTERN,
    NOTIFY_KEYS,
    RETENTION_KEYS,
    SCHEDULE_KEYS,
    VERIFY_MODES,
    Policy,
    check_schedule,
    retention_settings,
)
from tui.core.chains.policy import PATTERN_FIELDS as POLICY_PATTERN_FIELDS
from tui.core.qmp.address import Address, parse_address
from tui.core.qmp.settings import DEFAULT_SETTINGS

# The policy type and its pattern fields are the backup-chains feature's own: config only reads
# and checks them (with file and line).
PATTERN_FIELDS = tuple(sorted(POLICY_PATTERN_FIELDS))
# Only qcow2 records a backing file, so only qcow2 can hold a full → incremental chain; "raw" is
# named here so that it gets its own explanation instead of "must be one of".
IMAGE_FORMATS = ("qcow2",)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_MODIFIERS = {"ctrl", "shift", "alt", "meta", "super", "hyper"}


# ---------------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Files for QMP over TLS (QEMU's ``tls-creds-x509``); paths already expanded."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    name: str
    address: Address
    tags: tuple[str, ...] = ()
    tls: TLSConfig | None = None
    allow_insecure_tcp: bool = False
    line: int = 0
    # ssh:// only: an ssh_config file (-F) and extra -o Key=Value options for the system's ssh.
    ssh_config: Path | None = None
    ssh_options: tuple[str, ...] = ()
    # The guest agent's host-side socket (unix:/path), for policies with freeze: true.
    guest_agent: str | None = None


@dataclass(frozen=True, slots=True)
class Defaults:
    refresh_interval: float = DEFAULT_SETTINGS.refresh_interval
    read_only: bool = DEFAULT_SETTINGS.read_only
    theme: str = "dark"
    connect_timeout: float = DEFAULT_SETTINGS.connect_timeout
    # None: the app's default (the XDG state directory); see :meth:`Config.audit_path`.
    audit_log: Path | None = None


#: How a rights entry names who it is about: a unix group, or a user.
RIGHTS_KINDS = ("group", "user")


@dataclass(frozen=True, slots=True)
class Principal:
    """One entry of ``service.operators`` or ``service.viewers``: a unix group or user by name
    (``group:NAME``, ``user:NAME``; a plain ``NAME`` is a group)."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The ``service:`` section: how ``bitmap-tui serve`` serves its VMs and to whom."""

    #: Where each connection's socket ``NAME.qmp`` is served (None: /run/bitmap-tui for root,
    #: else $XDG_RUNTIME_DIR/bitmap-tui).
    socket_dir: Path | None = None
    #: Who may send any command (root and the service's own user always may).
    operators: tuple[Principal, ...] = ()
    #: Who may send commands that change nothing (queries).
    viewers: tuple[Principal, ...] = ()
    #: Where the service records every mutating command with its user (None: the state dir).
    audit_log: Path | None = None
    #: Apprise URLs every message goes to (a failed run, a broken chain, a missed run, ...).
    notify: tuple[str, ...] = ()
    #: A command's argv, run with each message on its standard input.
    notify_command: tuple[str, ...] = ()
    #: Seconds a VM may stay unreachable before a message says so.
    unreachable_after: float = 600.0

    def sockets(self) -> Path:
        return self.socket_dir or default_service_socket_dir()

    def socket_for(self, connection: str) -> Path:
        """Where the service serves ``connection``."""
        return self.sockets() / f"{connection}.qmp"

    def audit_path(self) -> Path:
        return self.audit_log or default_service_audit_path()


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None = None
    connections: tuple[ConnectionConfig, ...] = ()
    defaults: Defaults = field(default_factory=Defaults)
    keymap: dict[str, str] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)
    # Line of each keymap entry, so an id the app does not know is reported where it is written.
    keymap_lines: dict[str, int] = field(default_factory=dict, compare=False)
    service: ServiceConfig = field(default_factory=ServiceConfig)

    def check_keymap(self, known_ids: set[str]) -> None:
        """Refuse a keymap entry naming a binding id the app does not have (one ConfigError)."""
        for binding in self.keymap:
            if binding not in known_ids:
                hint = difflib.get_close_matches(binding, sorted(known_ids), n=1)
                tip = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ConfigError(
                    f"{self.path}:{self.keymap_lines.get(binding, 0)}: keymap.{binding}: "
                    f"no key binding has this id{tip}; ids: {', '.join(sorted(known_ids))}"
                )

    def connection(self, name: str) -> ConnectionConfig:
        for c in self.connections:
            if c.name == name:
                return c
        raise KeyError(name)

    def audit_path(self) -> Path:
        return self.defaults.audit_log or default_audit_path()

    def endpoints(self) -> list[Any]:
        """The configured connections as :class:`tui.core.qmp.fleet.Endpoint`s (config order)."""
        from tui.core.qmp.fleet import Endpoint

        return [Endpoint(c.name, c.address, _connection_options(c, self.path)) for c in self.connections]


def _connection_options(c: ConnectionConfig, path: Path | None) -> dict[str, Any]:
    """Per-connection keyword arguments for :class:`tui.core.qmp.connection.Connection`.

    TLS needs a transport that understands it; if this build's Connection does not take the
    option, refuse here with the config line rather than silently connecting in plaintext.
    """
    from tui.core.qmp.connection import Connection

    opts: dict[str, Any] = {}
    if c.tls is not None:
        opts.update(tls_ca=c.tls.ca, tls_cert=c.tls.cert, tls_key=c.tls.key)
    if c.allow_insecure_tcp:
        opts["allow_insecure_tcp"] = True
    if c.ssh_config is not None:
        opts["ssh_config"] = c.ssh_config
    if c.ssh_options:
        opts["ssh_options"] = list(c.ssh_options)
    accepted = set(inspect.signature(Connection.__init__).parameters)
    try:  # the remote transports (TLS, SSH) take their options through the Fleet
        from tui.core.qmp.transport import TRANSPORT_OPTIONS  # type: ignore[import-not-found,unused-ignore]

        accepted |= set(TRANSPORT_OPTIONS)
    except ImportError:
        pass
    for key in opts:
        if key not in accepted:
            raise ConfigError(
                f"{path}:{c.line}: connections.{c.name}: option '{key}' is not supported by "
                "this version's QMP transport"
            )
    return opts


# ---------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate a config file.

    ``path`` None means the default location, where a missing file is an empty config; an explicit
    path that does not exist is an error. Raises :class:`ConfigError` (one line) on any problem.
    """
    if path is None:
        p = default_config_path()
        if not p.exists():
            p = SYSTEM_CONFIG_PATH
        if not p.exists():
            return Config()
    else:
        p = Path(os.path.expanduser(os.fspath(path)))
    node, r = load_nodes(p, "config")
    return parse_config(node, r)


TOP_KEYS = {"connections", "defaults", "keymap", "policies", "service"}


def parse_config(node: Node | None, r: Reader) -> Config:
    top = r.mapping(node, "", TOP_KEYS)
    defaults = _defaults(r, top["defaults"][1]) if "defaults" in top else Defaults()
    conns = _connections(r, top["connections"][1]) if "connections" in top else ()
    keymap, lines = _keymap(r, top["keymap"][1]) if "keymap" in top else ({}, {})
    policies = _policies(r, top["policies"][1], conns) if "policies" in top else {}
    service = _service(r, top["service"][1]) if "service" in top else ServiceConfig()
    return Config(r.path, conns, defaults, keymap, policies, lines, service)


def _service(r: Reader, node: Node) -> ServiceConfig:
    m = r.mapping(node, "service", {"socket_dir", "operators", "viewers", "audit_log",
                                    *NOTIFY_KEYS, "unreachable_after"})
    kw: dict[str, Any] = _notify_settings(r, m, "service")
    if "unreachable_after" in m:
        kw["unreachable_after"] = r.number(m["unreachable_after"][1], "service.unreachable_after",
                                           minimum=1, maximum=7 * 86400)
    if "socket_dir" in m:
        kw["socket_dir"] = r.file_path(m["socket_dir"][1], "service.socket_dir")
    if "audit_log" in m:
        kw["audit_log"] = r.file_path(m["audit_log"][1], "service.audit_log")
    for key in ("operators", "viewers"):
        if key in m:
            vnode = m[key][1]
            kw[key] = tuple(r.checked(vnode, f"service.{key}", parse_principal, text)
                            for text in r.strings(vnode, f"service.{key}"))
    return ServiceConfig(**kw)


def _notify_settings(r: Reader, m: dict[str, tuple[Node, Node]], key: str) -> dict[str, Any]:
    """``notify`` (a list of Apprise URLs) and ``notify_command`` (an argv list) under ``key``."""
    out: dict[str, Any] = {}
    if "notify" in m:
        nnode = m["notify"][1]
        urls = r.strings(nnode, f"{key}.notify")
        for url in urls:
            if "://" not in url:
                r.fail(nnode, f"{key}.notify", f"'{url}' is not an Apprise URL (scheme://...)")
        out["notify"] = tuple(urls)
    if "notify_command" in m:
        cnode = m["notify_command"][1]
        argv = r.strings(cnode, f"{key}.notify_command")
        if not argv:
            r.fail(cnode, f"{key}.notify_command", "needs the command (an argv list)")
        out["notify_command"] = tuple(argv)
    return out


def parse_principal(text: str) -> Principal:
    """``group:NAME``, ``user:NAME``, or a plain ``NAME`` (a group)."""
    kind, sep, name = text.partition(":")
    if not sep:
        kind, name = "group", text
    if kind not in RIGHTS_KINDS:
        raise ValueError(f"'{text}': write group:NAME or user:NAME (a plain name is a group)")
    if not name or not _NAME.match(name):
        raise ValueError(f"'{text}': a {kind} name uses letters, digits, '_', '.', '-'")
    return Principal(kind, name)


def _defaults(r: Reader, node: Node) -> Defaults:
    keys = {"refresh_interval", "read_only", "theme", "connect_timeout", "audit_log"}
    m = r.mapping(node, "defaults", keys)
    kw: dict[str, Any] = {}
    if "refresh_interval" in m:
        kw["refresh_interval"] = r.number(
            m["refresh_interval"][1], "defaults.refresh_interval", minimum=0.1, maximum=3600
        )
    if "read_only" in m:
        kw["read_only"] = r.boolean(m["read_only"][1], "defaults.read_only")
    if "theme" in m:
        kw["theme"] = r.string(m["theme"][1], "defaults.theme")
    if "connect_timeout" in m:
        kw["connect_timeout"] = r.number(
            m["connect_timeout"][1], "defaults.connect_timeout", minimum=0.1, maximum=600
        )
    if "audit_log" in m:
        kw["audit_log"] = r.file_path(m["audit_log"][1], "defaults.audit_log")
    return Defaults(**kw)


def _connections(r: Reader, node: Node) -> tuple[ConnectionConfig, ...]:
    out: list[ConnectionConfig] = []
    for name, (knode, vnode) in r.mapping(node, "connections").items():
        key = f"connections.{name}"
        if not _NAME.match(name):
            r.fail(knode, key, "a connection name uses letters, digits, '_', '.', ':', '-'")
        out.append(_connection(r, name, knode, vnode, key))
    return tuple(out)


def _connection(r: Reader, name: str, knode: Node, vnode: Node, key: str) -> ConnectionConfig:
    # A bare string is the address: `vm1: unix:/run/vm1.qmp`.
    if isinstance(vnode, ScalarNode):
        addr = r.checked(vnode, f"{key}", parse_address, r.string(vnode, key))
        return ConnectionConfig(name, addr, line=knode.start_mark.line + 1)
    m = r.mapping(
        vnode, key, {"address", "tags", "tls", "allow_insecure_tcp", "ssh", "guest_agent"},
        ("address",), knode
    )
    anode = m["address"][1]
    addr = r.checked(anode, f"{key}.address", parse_address, r.string(anode, f"{key}.address"))
    tags = tuple(r.strings(m["tags"][1], f"{key}.tags")) if "tags" in m else ()
    insecure = r.boolean(m["allow_insecure_tcp"][1], f"{key}.allow_insecure_tcp") if (
        "allow_insecure_tcp" in m
    ) else False
    tls = _tls(r, m["tls"], f"{key}.tls") if "tls" in m else None
    if tls is not None and addr.kind != "tcp":
        r.fail(m["tls"][0], f"{key}.tls", f"TLS applies to tcp: addresses, not {addr.kind}")
    ssh_config, ssh_options = _ssh(r, m["ssh"], f"{key}.ssh") if "ssh" in m else (None, ())
    if "ssh" in m and addr.kind != "ssh":
        r.fail(m["ssh"][0], f"{key}.ssh", f"ssh options apply to ssh:// addresses, not {addr.kind}")
    if addr.kind == "tcp" and tls is None and not insecure and not addr.is_loopback:
        # QMP has no authentication: plaintext to another host must be a deliberate choice.
        r.fail(
            anode,
            f"{key}.address",
            f"plaintext TCP to non-loopback host {addr.host}: add tls (ca, cert, key) or set "
            "allow_insecure_tcp: true",
        )
    agent = None
    if "guest_agent" in m:
        gnode = m["guest_agent"][1]
        agent = r.string(gnode, f"{key}.guest_agent")
        r.checked(gnode, f"{key}.guest_agent", _agent_address, agent)
    return ConnectionConfig(
        name, addr, tags, tls, insecure, knode.start_mark.line + 1, ssh_config, tuple(ssh_options),
        agent,
    )


def _agent_address(text: str) -> str:
    """A guest agent address: ``unix:/absolute/path``."""
    from tui.core.qmp.agent import AgentError, agent_path

    try:
        return agent_path(text)
    except AgentError as exc:
        raise ConfigError(str(exc)) from None


def _ssh(r: Reader, nodes: tuple[Node, Node], key: str) -> tuple[Path | None, list[str]]:
    knode, node = nodes
    m = r.mapping(node, key, {"config", "options"}, (), knode)
    config = r.file_path(m["config"][1], f"{key}.config") if "config" in m else None
    options: list[str] = []
    if "options" in m:
        options = r.strings(m["options"][1], f"{key}.options")
        for opt in options:
            k, sep, _v = opt.partition("=")
            if not sep or not k.strip() or any(c.isspace() for c in k):
                r.fail(m["options"][1], f"{key}.options", f"'{opt}' is not Key=Value (an ssh -o option)")
    return config, options


def _tls(r: Reader, nodes: tuple[Node, Node], key: str) -> TLSConfig:
    knode, node = nodes
    m = r.mapping(node, key, {"ca", "cert", "key"}, ("ca",), knode)
    cert = r.file_path(m["cert"][1], f"{key}.cert") if "cert" in m else None
    tkey = r.file_path(m["key"][1], f"{key}.key") if "key" in m else None
    if (cert is None) != (tkey is None):
        r.fail(knode, key, "cert and key go together: give both or neither")
    return TLSConfig(r.file_path(m["ca"][1], f"{key}.ca"), cert, tkey)


def parse_keys(text: str) -> str:
    """Validate a Textual key list such as ``"q,ctrl+q"``; returns it normalised (no spaces)."""
    keys = [k.strip() for k in text.split(",")]
    for k in keys:
        if not k:
            raise ValueError(f"empty key in '{text}'")
        if any(c.isspace() for c in k):
            raise ValueError(f"key '{k}' contains a space")
        *mods, base = k.split("+") if len(k) > 1 else [k]
        bad = [m for m in mods if m not in _MODIFIERS]
        if bad or not base:
            raise ValueError(
                f"key '{k}': modifiers are {', '.join(sorted(_MODIFIERS))} (e.g. ctrl+r)"
            )
    return ",".join(keys)


def _keymap(r: Reader, node: Node) -> tuple[dict[str, str], dict[str, int]]:
    out: dict[str, str] = {}
    lines: dict[str, int] = {}
    for binding, (knode, vnode) in r.mapping(node, "keymap").items():
        key = f"keymap.{binding}"
        keys = ",".join(r.strings(vnode, key))
        out[binding] = r.checked(vnode, key, parse_keys, keys)
        lines[binding] = knode.start_mark.line + 1
    return out, lines


def check_pattern(pattern: str, drives: int) -> str:
    """A file name pattern: known ``{fields}`` only, no directories, unique per image."""
    try:
        parsed = [(f, spec) for _, f, spec, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise ValueError(f"bad pattern '{pattern}': {exc}") from None
    fields = [f for f, _ in parsed]
    problems = [format_spec_problem(spec or "") for _, spec in parsed]
    if any(problems):
        raise ValueError(next(p for p in problems if p))
    unknown = [f for f in fields if f not in PATTERN_FIELDS]
    if unknown:
        raise ValueError(
            f"unknown field {{{unknown[0]}}} in pattern; use {', '.join('{' + f + '}' for f in PATTERN_FIELDS)}"
        )
    if "/" in pattern or pattern in (".", ".."):
        raise ValueError("the pattern is a file name: put directories in target_dir")
    if "n" not in fields and "timestamp" not in fields and "txn" not in fields:
        raise ValueError(
            "the pattern needs {n}, {timestamp} or {txn}, or every backup overwrites the last"
        )
    if drives > 1 and "drive" not in fields:
        raise ValueError("the pattern needs {drive}: the policy has several drives")
    return pattern


def _whole(r: Reader, node: Node, key: str, lo: int, hi: int) -> int:
    """A whole number in [lo, hi] (1.5 bytes/s or a granularity of 4096.5 is a mistake)."""
    v = int(r.typed(node, key, int))
    if not lo <= v <= hi:
        r.fail(node, key, f"must be between {lo} and {hi}, got {v}")
    return v


_POLICY_KEYS = frozenset({
    "connection", "drives", "bitmap", "target_dir", "pattern", "format", "completion_mode", "speed",
    "persistent", "granularity", "verify", *RETENTION_KEYS, *SCHEDULE_KEYS, *NOTIFY_KEYS,
})


def _policies(
    r: Reader, node: Node, conns: tuple[ConnectionConfig, ...]
) -> dict[str, Policy]:
    out: dict[str, Policy] = {}
    names = {c.name for c in conns}
    for pname, (knode, vnode) in r.mapping(node, "policies").items():
        key = f"policies.{pname}"
        if not _NAME.match(pname):
            r.fail(knode, key, "a policy name uses letters, digits, '_', '.', ':', '-'")
        out[pname] = _policy(r, pname, knode, vnode, names)
    return out


def _policy(r: Reader, pname: str, knode: Node, vnode: Node, names: set[str]) -> Policy:
    key = f"policies.{pname}"
    # "bitmap" only names a chain from before owned bitmap names (adopted with a full).
    m = r.mapping(vnode, key, set(_POLICY_KEYS), ("connection", "drives", "target_dir"), knode)
    cnode = m["connection"][1]
    conn = r.string(cnode, f"{key}.connection")
    if conn not in names:
        known = ", ".join(sorted(names)) or "none configured"
        r.fail(cnode, f"{key}.connection", f"no connection named '{conn}' (known: {known})")
    drives = _policy_drives(r, m["drives"][1], key)
    bnode = m["bitmap"][1] if "bitmap" in m else vnode
    bitmap = r.string(bnode, f"{key}.bitmap") if "bitmap" in m else "bitmap-tui"
    problem = bitmap_name_problem(bitmap)
    if problem:
        r.fail(bnode, f"{key}.bitmap", problem)
    target = r.string(m["target_dir"][1], f"{key}.target_dir")
    if not target.startswith("/"):
        # The images are created on the QEMU host, so a path relative to here means nothing.
        r.fail(m["target_dir"][1], f"{key}.target_dir", "must be an absolute path on the QEMU host")
    pnode = m["pattern"][1] if "pattern" in m else vnode
    raw = r.string(pnode, f"{key}.pattern") if "pattern" in m else DEFAULT_PATTERN
    pattern = r.checked(pnode, f"{key}.pattern", partial(check_pattern, drives=len(drives)), raw)
    fmt = _policy_format(r, m["format"][1], key) if "format" in m else "qcow2"
    mode = (
        r.choice(m["completion_mode"][1], f"{key}.completion_mode", COMPLETION_MODES)
        if "completion_mode" in m
        else "individual"
    )
    speed = _whole(r, m["speed"][1], f"{key}.speed", 0, 2**63) if "speed" in m else 0
    persistent = r.boolean(m["persistent"][1], f"{key}.persistent") if "persistent" in m else False
    gran = _granularity(r, m["granularity"][1], key) if "granularity" in m else None
    verify = (r.choice(m["verify"][1], f"{key}.verify", VERIFY_MODES)
              if "verify" in m else "never")
    given = {k: r.value(m[k][1], f"{key}.{k}") for k in RETENTION_KEYS if k in m}
    extra = r.checked(vnode, key, partial(retention_settings, ctx=""), given)
    if "schedule" in m:
        snode = m["schedule"][1]
        extra["schedule"] = r.checked(snode, f"{key}.schedule", check_schedule,
                                      r.value(snode, f"{key}.schedule"))
    if "jitter" in m:
        extra["jitter"] = _whole(r, m["jitter"][1], f"{key}.jitter", 0, 86400)
    extra.update(_notify_settings(r, m, key))
    return Policy(pname, conn, tuple(drives), bitmap, target, pattern, fmt, mode,
                  speed, persistent, gran, verify, **extra)


def _policy_drives(r: Reader, dnode: Node, key: str) -> list[str]:
    drives = r.strings(dnode, f"{key}.drives")
    if not drives:
        r.fail(dnode, f"{key}.drives", "needs at least one drive")
    if len(set(drives)) != len(drives):
        r.fail(dnode, f"{key}.drives", "a drive is listed twice")
    return drives


def _policy_format(r: Reader, fnode: Node, key: str) -> str:
    if r.string(fnode, f"{key}.format") == "raw":
        r.fail(fnode, f"{key}.format", "raw cannot be used: only qcow2 can hold an incremental "
               "chain (an incremental image needs a backing file)")
    return r.choice(fnode, f"{key}.format", IMAGE_FORMATS)


def _granularity(r: Reader, gnode: Node, key: str) -> int:
    gran = _whole(r, gnode, f"{key}.granularity", 512, 2**26)
    if gran & (gran - 1):
        r.fail(gnode, f"{key}.granularity", "must be a power of two")
    return gran
