"""The service: every configured connection served (``bitmap-tui serve``), until SIGTERM or
SIGINT; SIGHUP reads the config again and adds or removes VMs without touching the clients of
the VMs that stay."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from tui.core.base.audit import AuditLog, open_audit
from tui.core.base.errors import BitmapTuiError
from tui.core.base.paths import default_ledger_path
from tui.core.base.text import LINE_LIMIT, shown
from tui.core.config import Config, load_config
from tui.core.qmp.fleet import Endpoint
from tui.core.qmp.settings import ConnectionSettings
from tui.service.runs import ScheduledRuns
from tui.service.systemd import notify
from tui.service.vm import ServedVm

log = logging.getLogger("bitmap-tui.serve")
DIRECTORY_MODE = 0o755


class Service:
    """All served VMs of one config file (``None``: the default config)."""

    def __init__(self, config_path: str | None, ledger_path: Path | None = None) -> None:
        self.config_path = config_path
        self.config: Config = load_config(config_path)
        self.runs = ScheduledRuns(config_path, ledger_path or default_ledger_path())
        self.directory = self.config.service.sockets()
        self.audit: AuditLog = open_audit(self.config.service.audit_path())
        self.vms: dict[str, ServedVm] = {}
        self._stop = asyncio.Event()

    def _settings(self) -> ConnectionSettings:
        return ConnectionSettings(connect_timeout=self.config.defaults.connect_timeout)

    async def run(self) -> None:
        """Serve until stopped; READY=1 to systemd once every socket listens."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, DIRECTORY_MODE)
        for endpoint in self.config.endpoints():
            await self._add(endpoint)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        log.info("serving %d VM(s) in %s; audit log %s", len(self.vms), self.directory,
                 self.audit.path)
        self.runs.start(self.config)
        notify("READY=1")
        try:
            await self._stop.wait()
        finally:
            notify("STOPPING=1")
            await self.runs.stop()
            for vm in list(self.vms.values()):
                await vm.stop()
            self.audit.close()
            log.info("stopped")

    async def _add(self, endpoint: Endpoint) -> None:
        vm = ServedVm(endpoint, self.config.service, self.audit, self._settings())
        await vm.start()
        self.vms[endpoint.name] = vm

    async def reload(self) -> None:
        """Read the config again: VMs gone or moved are stopped, new ones started, rights
        renewed; the clients of VMs that stay keep their connections."""
        try:
            config = load_config(self.config_path)
        except BitmapTuiError as exc:
            log.info("reload refused, the old config stays: %s", exc)
            return
        self.config = config
        wanted = {ep.name: ep for ep in config.endpoints()}
        for name, vm in list(self.vms.items()):
            if name not in wanted or wanted[name].address != vm.endpoint.address:
                await vm.stop()
                del self.vms[name]
                log.info("%s: no longer served", name)
        for name, endpoint in wanted.items():
            if name not in self.vms:
                await self._add(endpoint)
        for vm in self.vms.values():
            vm.rights = config.service
        await self.runs.stop()
        self.runs.start(config)
        log.info("config reloaded: %d VM(s) served", len(self.vms))


class _SafeFormatter(logging.Formatter):
    """Each log line made safe where it is written: addresses, user names and QEMU's words
    come from outside."""

    def format(self, record: logging.LogRecord) -> str:
        return shown(super().format(record), LINE_LIMIT)


def serve(config_path: str | None, ledger_path: Path | None = None) -> int:
    """Run the service in the foreground (logs to stderr); the exit status."""
    # Our lines only: qemu.qmp logs each failure it raises, and the upstream says it once.
    handler = logging.StreamHandler()
    handler.setFormatter(_SafeFormatter("bitmap-tui serve: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    service = Service(config_path, ledger_path)
    asyncio.run(service.run())
    return 0



