"""The composition root: launch options → config → endpoints → one fleet, decided the same way
for the console and every headless command.

Read-only, the audit log, timeouts and the remote-access options (TLS, SSH) are decided here and
nowhere else, so a guard that holds in one command holds in all of them:

- read-only is on when ``--read-only`` was given *or* the config's ``defaults.read_only`` is true;
  a read-only fleet refuses every mutating QMP command in the core, and :meth:`Session.may_change`
  refuses file deletions and other local changes;
- a session that may change a VM opens its audit log before anything is sent (``--audit-log``,
  else the config's ``defaults.audit_log``, else the XDG state directory); a log that cannot be
  opened stops the command with one line;
- the connect timeout is ``--timeout`` when given, else the config's ``defaults.connect_timeout``;
- a configured connection whose ``bitmap-tui serve`` socket answers is reached through it (many
  clients at once, rights by unix user), unless ``--direct``; a viewer's console is read-only.

No Textual here: the console receives a :class:`Session` from the command line like every command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tui.core.base.audit import AuditLog, open_audit
from tui.core.base.errors import ConfigError, ReadOnlyError
from tui.core.base.heap import settle_heap
from tui.core.base.paths import default_ledger_path
from tui.core.chains.policy import Policy
from tui.core.chains.reconcile import watch_fleet
from tui.core.config import Config, load_config
from tui.core.model.store import Store
from tui.core.qmp.address import parse_address
from tui.core.qmp.fleet import Endpoint, Fleet, endpoints_from
from tui.core.qmp.served import VIEWER, ServiceSocket, probe_service
from tui.demo.vm import Demo

# How long a command waits for every connection's first answer, on top of the connect timeout
# (a connect, the probe and the first node and job queries).
FIRST_ANSWER_SLACK = 5.0


@dataclass(frozen=True, slots=True)
class LaunchOptions:
    """What the user asked for on the command line (every field optional)."""

    #: ``--connect`` addresses (``[NAME=]ADDR``); empty: the config's connections.
    connect: tuple[str, ...] = ()
    #: ``--config FILE``; None: the XDG default (a missing default file is an empty config).
    config: str | None = None
    #: ``--timeout`` seconds for a connect; None: the config's ``defaults.connect_timeout``.
    timeout: float | None = None
    #: ``--audit-log FILE``; None: the config's ``defaults.audit_log``, else the XDG state dir.
    audit_log: str | None = None
    #: ``--read-only``: never send a mutating command, never delete a file.
    read_only: bool = False
    #: ``--theme NAME``; None: the config's ``defaults.theme``.
    theme: str | None = None
    #: ``--ledger FILE``; None: the XDG state dir's ledger.
    ledger: str | None = None
    #: Remote-access options applied to every ``--connect`` address (``tls_ca``, ``tls_cert``,
    #: ``tls_key``, ``ssh_config``, ``allow_insecure_tcp``).
    transport: Mapping[str, Any] = field(default_factory=dict)
    #: ``--direct``: connect to QEMU's own socket even when ``bitmap-tui serve`` serves it.
    direct: bool = False


@dataclass(frozen=True, slots=True)
class ConsoleContext:
    """Everything the console needs from the session, decided there once (read-only, the
    ledger, the audit log): the console reads no default and opens no ledger of its own."""

    #: The state the screens show (the fleet's store when there is a fleet).
    store: Store
    #: The connections; None for a console that only shows a store (tests, screenshots).
    fleet: Fleet | None = None
    #: The backup-chain ledger the chains screen, the reconcile and the break guards use;
    #: None: no ledger (nothing is recorded, the chains screen is empty).
    ledger_path: Path | None = None
    #: The config's backup policies by name.
    policies: Mapping[str, Policy] = field(default_factory=dict)
    #: No mutating action is offered or sent.
    read_only: bool = False
    #: Where mutating commands and local changes are recorded (None when read-only).
    audit: AuditLog | None = None
    #: The demo sandbox when the console runs on the demo QEMU.
    demo: Demo | None = None
    #: How long a start-up step waits for the fleet's first answer.
    first_answer_timeout: float = 20.0

    @classmethod
    def of_fleet(cls, fleet: Fleet, **fields: Any) -> ConsoleContext:
        """A context on ``fleet``: its store, read-only flag and audit log (``fields`` may narrow
        it: ``read_only=True``)."""
        base: dict[str, Any] = {"read_only": fleet.read_only, "audit": fleet.audit}
        return cls(store=fleet.store, fleet=fleet, **{**base, **fields})


class Session:
    """One run of bitmap-tui: its options, its config and the decisions made from them."""

    def __init__(self, options: LaunchOptions, config: Config | None = None) -> None:
        self.options = options
        self.config = config if config is not None else load_config(options.config)
        self._audit: AuditLog | None = None
        self._endpoints: list[Endpoint] | None = None
        #: The configured connections reached through the service, by name.
        self.served: dict[str, ServiceSocket] = {}

    def with_options(self, **changes: Any) -> Session:
        """The same config with some options changed (e.g. the demo's own audit log)."""
        return Session(replace(self.options, **changes), self.config)

    # ------------------------------------------------------------------ decisions

    @property
    def read_only(self) -> bool:
        """``--read-only``, the config's ``defaults.read_only``, or only a viewer's rights at
        the service on every connection: any is enough."""
        return self.options.read_only or self.config.defaults.read_only or self.viewer_only

    @property
    def connect_timeout(self) -> float:
        """``--timeout`` when given, else the config's ``defaults.connect_timeout``."""
        if self.options.timeout is not None:
            return self.options.timeout
        return self.config.defaults.connect_timeout

    @property
    def first_answer_timeout(self) -> float:
        """How long to wait for every connection's first answer."""
        return self.connect_timeout * 3 + FIRST_ANSWER_SLACK

    @property
    def theme(self) -> str:
        """``--theme`` when given, else the config's."""
        return self.options.theme or self.config.defaults.theme

    @property
    def audit_path(self) -> Path:
        """Where this session's mutating commands are recorded."""
        if self.options.audit_log:
            return Path(self.options.audit_log).expanduser()
        return self.config.audit_path()

    @property
    def ledger_path(self) -> Path:
        """The backup-chain ledger of this session."""
        return Path(self.options.ledger).expanduser() if self.options.ledger \
            else default_ledger_path()

    def policy(self, name: str) -> Policy:
        """The config's policy ``name``; one ConfigError line naming the known ones if none."""
        found = self.config.policies.get(name)
        if found is None:
            known = ", ".join(sorted(self.config.policies)) or "none"
            raise ConfigError(f"no policy named '{name}' (known: {known})")
        return found

    def may_change(self, what: str) -> None:
        """Refuse a local change (a file deletion, ...) in read-only mode with one line."""
        if self.read_only:
            raise ReadOnlyError(f"read-only: not {what}")

    def change_log(self, what: str) -> AuditLog:
        """The audit log a local change (a file deletion) is recorded in; ReadOnlyError (one
        line) in read-only mode, so a read-only session has no way to make one."""
        self.may_change(what)
        log = self.audit()
        assert log is not None  # not read-only: audit() opened it (or raised ConfigError)
        return log

    def audit(self) -> AuditLog | None:
        """The audit log, opened once; None when read-only (nothing can be sent to record)."""
        if self.read_only:
            return None
        if self._audit is None:
            self._audit = open_audit(self.audit_path)
        return self._audit

    # ------------------------------------------------------------------ connections

    def endpoints(self) -> list[Endpoint]:
        """``--connect`` endpoints (with the remote-access options), else the config's."""
        if self._endpoints is None:
            if self.options.connect:
                extra = dict(self.options.transport)
                self._endpoints = [
                    replace(ep, options={**ep.options, **extra}) if extra else ep
                    for ep in endpoints_from(self.options.connect)
                ]
            else:
                self._endpoints = [self._through_service(ep) for ep in self.config.endpoints()]
        return self._endpoints

    def _through_service(self, endpoint: Endpoint) -> Endpoint:
        """The service's socket for a configured connection when ``bitmap-tui serve`` answers
        there (QEMU serves one client per socket; the service serves many), unless
        ``--direct``."""
        if self.options.direct:
            return endpoint
        path = str(self.config.service.socket_for(endpoint.name))
        found = probe_service(path)
        if found is None:
            return endpoint
        self.served[endpoint.name] = found
        return Endpoint(endpoint.name, parse_address(f"unix:{path}"))

    @property
    def viewer_only(self) -> bool:
        """Every connection goes through the service, which lets this user only query."""
        names = self.endpoint_names()
        return bool(names) and all(
            n in self.served and self.served[n].role == VIEWER for n in names)

    def endpoint_names(self) -> list[str]:
        return [ep.name for ep in self.endpoints()]

    def open_fleet(self, endpoints: Iterable[Endpoint] | None = None, *,
                   reconnect: bool = False, read_only: bool = False, **options: Any) -> Fleet:
        """A fleet over ``endpoints`` (default: all of this session's), not started yet.

        ``read_only=True`` narrows a session further (``status`` only ever queries); it can never
        widen it. The audit log is opened first: when it cannot be, nothing is connected."""
        narrowed = self.read_only or read_only
        fleet = Fleet(
            read_only=narrowed,
            audit=None if narrowed else self.audit(),
            reconnect=reconnect,
            refresh_interval=self.config.defaults.refresh_interval,
            connect_timeout=self.connect_timeout,
            **options,
        )
        for ep in self.endpoints() if endpoints is None else endpoints:
            fleet.add(ep)
        return fleet

    def console_context(self, fleet: Fleet, demo: Demo | None = None) -> ConsoleContext:
        """What the console is given: this session's fleet, ledger, policies and guards."""
        return ConsoleContext.of_fleet(fleet, ledger_path=self.ledger_path,
                                       policies=dict(self.config.policies), demo=demo,
                                       first_answer_timeout=self.first_answer_timeout)

    def watch_chains(self, fleet: Fleet) -> Callable[[], None]:
        """Reconcile the ledger's chains on each connect of ``fleet`` and record the breaks seen
        in their bitmaps while it runs (the console's background work); returns the stop. A
        read-only session changes nothing, so it watches nothing."""
        if self.read_only:
            return lambda: None
        return watch_fleet(fleet, self.ledger_path)

    async def connect(self, names: Iterable[str] | None = None, *,
                      read_only: bool = False, reconnect: bool = False) -> Fleet:
        """Open, start and wait for the first answer of the named connections (default: all);
        ``reconnect`` keeps them connected (a command that must see a lost link come back).

        Connections that did not answer in time are left as they are (their model says why)."""
        wanted = None if names is None else set(names)
        eps = [ep for ep in self.endpoints() if wanted is None or ep.name in wanted]
        fleet = self.open_fleet(eps, read_only=read_only, reconnect=reconnect)
        fleet.start()
        try:
            await fleet.wait_first_answer(self.first_answer_timeout)
        except TimeoutError:
            pass
        settle_heap()  # the synced state lives as long as the command: out of the GC's walks
        return fleet

    def close(self) -> None:
        """Close the audit log (idempotent)."""
        if self._audit is not None:
            self._audit.close()
            self._audit = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
