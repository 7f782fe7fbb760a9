"""The console in a real terminal: a private tmux server, and a busy CPU to make races likely."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator


class Tmux:
    """A private tmux server (its own socket name) running one program at 80x24."""

    def __init__(self, argv: list[str], width: int = 80, height: int = 24) -> None:
        self.server = f"bitmap-tui-test-{uuid.uuid4().hex[:8]}"
        self.argv = argv
        self.size = (width, height)

    def tmux(self, *args: str) -> str:
        res = subprocess.run(["tmux", "-L", self.server, *args], capture_output=True, text=True,
                             timeout=30, check=False)
        return res.stdout

    def start(self) -> None:
        w, h = self.size
        # A list argv: tmux runs it without a shell when given as separate arguments.
        # remain-on-exit keeps a crashed program's last words on screen for the failure message.
        subprocess.run(["tmux", "-L", self.server, "-f", "/dev/null", "new-session", "-d",
                        "-x", str(w), "-y", str(h), "-s", "t", *self.argv, ";",
                        "set-option", "-t", "t", "remain-on-exit", "on"], check=True, timeout=30)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def literal(self, text: str) -> None:
        self.tmux("send-keys", "-t", "t", "-l", text)

    async def wait_screen(self, *needles: str, timeout: float = 30.0, line: bool = False) -> str:
        """Wait until every needle is on screen (``line``: all on one line)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            text = self.screen()
            places = text.splitlines() if line else [text]
            if any(all(n in place for n in needles) for place in places):
                return text
            if loop.time() > end:
                raise AssertionError(f"{needles} not on screen:\n{text}")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        self.tmux("kill-server")


@contextlib.contextmanager
def cpu_load(workers: int = 2) -> Iterator[None]:
    """Busy processes for the duration: slow queries make the races of a quit likely."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(workers)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()
