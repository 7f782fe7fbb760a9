"""Start the helper server processes (flood server, fake fleet) and stop them again."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

from benchmarks.common import ROOT


@contextlib.contextmanager
def server_process(module: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Run ``python -m benchmarks.<module> ARGS`` until the block ends (it stops when stdin closes)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"benchmarks.{module} did not start (said {line!r})")
        proc.ready_payload = line[len("ready"):].strip()  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.stdin:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
