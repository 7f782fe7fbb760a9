"""Notifications: a run that left an image not VALID, a chain that broke (its next run is a full),
a scheduled run missed or skipped, a VM unreachable for too long.

Each message goes to the Apprise URLs (``service.notify`` plus the policy's ``notify``) and to
``notify_command`` (an argv; the message on its stdin). Sending happens in the background: a
failing receiver is logged and retried with backoff, and never fails or delays a backup.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import apprise

from tui.core.base.text import shown
from tui.core.chains.policy import Policy
from tui.core.chains.run import RunResult
from tui.core.config import ServiceConfig
from tui.core.ledger.rows import ImageState

log = logging.getLogger(__name__)

# Seconds to wait before each retry of a failed send.
RETRY_DELAYS = (2.0, 10.0, 60.0)
# Upper bound for one send (one Apprise notify, or the command).
SEND_TIMEOUT = 30.0


@dataclass(frozen=True)
class Target:
    """Where messages go: Apprise URLs and/or a command's argv."""

    urls: tuple[str, ...] = ()
    command: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.urls or self.command)


def _send_apprise(urls: Sequence[str], title: str, body: str) -> None:
    ap = apprise.Apprise()
    for url in urls:
        if not ap.add(url):
            raise OSError(f"not a notification URL Apprise knows: {url}")
    if not ap.notify(title=title, body=body):
        raise OSError("the notification service did not accept it")


def _send_command(argv: Sequence[str], title: str, body: str) -> None:
    done = subprocess.run(list(argv), input=f"{title}\n\n{body}\n", text=True,
                          capture_output=True, timeout=SEND_TIMEOUT, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise OSError(f"{argv[0]}: {tail}")


def target_for(service: ServiceConfig, policy: Policy | None) -> Target:
    """Where a message about ``policy`` goes: the service's URLs and the policy's; the policy's
    ``notify_command`` if it has one, else the service's."""
    if policy is None:
        return Target(service.notify, service.notify_command)
    return Target(service.notify + policy.notify, policy.notify_command or service.notify_command)


@dataclass
class Notifier:
    """Sends messages in the background; ``await drain()`` waits for the pending ones."""

    delays: tuple[float, ...] = RETRY_DELAYS
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    def send(self, target: Target, title: str, body: str) -> None:
        """Queue one message (returns at once); nothing happens without a target."""
        if not target:
            return
        task = asyncio.create_task(self._deliver(target, title, body), name=f"notify {title}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _deliver(self, target: Target, title: str, body: str) -> None:
        sends: list[tuple[Callable[[Sequence[str], str, str], None], tuple[str, ...]]] = []
        sends += [(_send_apprise, target.urls)] if target.urls else []
        sends += [(_send_command, target.command)] if target.command else []
        for fn, where in sends:
            for attempt, delay in enumerate((0.0, *self.delays)):
                await asyncio.sleep(delay)
                try:
                    await asyncio.wait_for(asyncio.to_thread(fn, where, title, body), SEND_TIMEOUT)
                    break
                except (OSError, subprocess.SubprocessError, TimeoutError) as exc:
                    log.warning("notification %r failed (attempt %d): %s", shown(title),
                                attempt + 1, shown(str(exc)))


def run_message(result: RunResult) -> tuple[str, str] | None:
    """A run's message when an image is not VALID or a chain broke; None when all is well."""
    lines: list[str] = []
    for d in result.drives:
        if d.state != ImageState.VALID:
            lines.append(f"drive {d.drive}: {str(d.state).upper()}"
                         + (f": {d.error}" if d.error else ""))
        elif d.kind == "full" and "chain broken" in d.reason:
            lines.append(f"drive {d.drive}: the chain broke, this run took a full ({d.reason})")
    if result.refused:
        lines.append(f"refused: {result.refused}")
    if not lines:
        return None
    verdict = "FAILED" if result.refused or any(d.state != ImageState.VALID
                                                 for d in result.drives) else "new chain"
    title = f"bitmap-tui: {result.connection} policy {result.policy}: {verdict}"
    body = [f"VM {result.connection}, policy {result.policy}:", *lines]
    body += ["next:", *result.next] if result.next else []
    return title, "\n".join(body)


def schedule_message(connection: str, policy: str, what: str) -> tuple[str, str]:
    """A missed or skipped scheduled run."""
    return (f"bitmap-tui: {connection} policy {policy}: scheduled run {what.split()[0].rstrip(':')}",
            f"VM {connection}, policy {policy}: {what}\nnext: check the service and the run "
            f"before with `bitmap-tui schedule`")


def schedule_notices(notifier: Notifier, service: ServiceConfig) -> Callable[[Policy, str], None]:
    """The scheduler's ``on_event``: each missed or skipped run is sent where the policy's
    messages go."""
    def notice(policy: Policy, what: str) -> None:
        notifier.send(target_for(service, policy),
                      *schedule_message(policy.connection, policy.name, what))
    return notice


def unreachable_message(connection: str, seconds: float, error: str) -> tuple[str, str]:
    """A VM whose QMP socket has not answered for ``seconds``."""
    return (f"bitmap-tui: {connection} unreachable",
            f"VM {connection} has been unreachable for {seconds:.0f} s: {error}\n"
            "next: its scheduled backups cannot run; check that QEMU runs and its QMP socket")


@dataclass
class UnreachableWatch:
    """Tells once when a VM has been unreachable for ``after`` seconds (again only after it was
    reachable in between)."""

    after: float
    _down_since: dict[str, float] = field(default_factory=dict)
    _told: set[str] = field(default_factory=set)

    def update(self, connection: str, reachable: bool, error: str, now: float
               ) -> tuple[str, str] | None:
        """The connection's state at ``now``: the message to send, when one is due."""
        if reachable:
            self._down_since.pop(connection, None)
            self._told.discard(connection)
            return None
        since = self._down_since.setdefault(connection, now)
        if connection in self._told or now - since < self.after:
            return None
        self._told.add(connection)
        return unreachable_message(connection, now - since, error)
