"""A lost terminal ends the process: SIGHUP, SIGTERM or a hung-up stdin start an orderly
shutdown, and a watchdog thread hard-exits if it has not finished in a few seconds.

The orderly path runs in the event loop (close the QMP connections first, then let the app
go). It can get stuck where nothing in the loop can help: Textual's output thread blocks the
main thread when nobody reads the terminal any more. So the handlers here are plain ``signal``
handlers (they run even while the main thread waits on a lock, where a loop signal handler
would never run) and the watchdog is its own thread: after :data:`WATCHDOG_SECONDS` it runs
the emergency clean-up (the demo's QEMU and scratch files) and calls ``os._exit``, which also
closes every socket still held.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

WATCHDOG_SECONDS = 5.0
# How often the stdin watcher looks for a hang-up.
HANGUP_POLL_SECONDS = 0.25
EXIT_INTERRUPTED = 143
_HANGUP = select.POLLHUP | select.POLLERR | select.POLLNVAL


class TerminalGuard:
    """Turns a lost terminal into ``on_lost()`` in the loop, backed by a hard-exit watchdog.

    ``on_lost`` runs in the event loop (once); ``emergency`` runs in the watchdog thread right
    before ``os._exit`` and must be quick and thread-safe (kill a process, remove a directory).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[], None],
                 emergency: Callable[[], None], *, stdin_fd: int | None = None,
                 watchdog_seconds: float = WATCHDOG_SECONDS) -> None:
        self.loop = loop
        self.on_lost = on_lost
        self.emergency = emergency
        self.stdin_fd = stdin_fd
        self.watchdog_seconds = watchdog_seconds
        self.reason: str | None = None
        self._armed = threading.Event()
        self._closed = threading.Event()
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Take SIGHUP and SIGTERM, and watch stdin for a hang-up (when it is a terminal)."""
        for sig in (signal.SIGHUP, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        fd = self.stdin_fd
        if fd is None:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                fd = sys.__stdin__.fileno() if sys.__stdin__ is not None else None
        if fd is not None and os.isatty(fd):
            threading.Thread(target=self._watch_hangup, args=(fd,), daemon=True,
                             name="bitmap-tui-hangup").start()

    def uninstall(self) -> None:
        """Give the signals back and stop watching stdin (the watchdog, once armed, stays)."""
        self._closed.set()
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.lost(signal.Signals(signum).name)

    def _watch_hangup(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, _HANGUP)
        while not self._closed.is_set():
            try:
                events = poller.poll(HANGUP_POLL_SECONDS * 1000)
            except OSError:
                events = [(fd, select.POLLERR)]
            if any(mask & _HANGUP for _, mask in events):
                self.lost("terminal hung up")
                return

    def lost(self, reason: str) -> None:
        """The terminal is gone (any thread, signal handlers included): shut down, or exit hard."""
        if self._armed.is_set():
            return
        self.reason = reason
        self.arm()
        with contextlib.suppress(RuntimeError):  # the loop is already closed: the watchdog acts
            self.loop.call_soon_threadsafe(self.on_lost)

    def arm(self) -> None:
        """Start the watchdog (once): after ``watchdog_seconds`` the process exits, whatever."""
        if self._armed.is_set():
            return
        self._armed.set()
        threading.Thread(target=self._watchdog, daemon=True, name="bitmap-tui-watchdog").start()

    def _watchdog(self) -> None:
        # Never disarmed: a process that ended in time is gone before this wakes up.
        time.sleep(self.watchdog_seconds)
        with contextlib.suppress(BaseException):
            self.emergency()
        os._exit(EXIT_INTERRUPTED)
