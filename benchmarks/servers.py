"""Start the helper server processes (flood server, fake fleet) and stop them again."""

from __future__ import annotations

import contextlib
import select
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from benchmarks.common import ROOT


@dataclass
class Server:
    """A running helper process and what it said when ready (e.g. its socket paths)."""

    proc: subprocess.Popen[str]
    payload: str


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """The helper's first line, or '' if it says nothing within ``timeout`` (never hang)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


@contextlib.contextmanager
def server_process(module: str, *args: str, timeout: float = 120.0) -> Iterator[Server]:
    """Run ``python -m benchmarks.<module> ARGS`` until the block ends (it stops when stdin closes)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = _readline(proc, timeout)
        if not line.startswith("ready"):
            raise RuntimeError(f"benchmarks.{module} did not start (said {line!r})")
        yield Server(proc, line[len("ready"):].strip())
    finally:
        if proc.stdin:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
