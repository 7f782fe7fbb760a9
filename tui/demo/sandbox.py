"""A throw-away local QEMU with scratch qcow2 drives: the demo and the test harness.

``qemu-system-x86_64 -M none -nodefaults -display none -S`` starts in ~20 ms and uses ~32 MiB;
block jobs run with the VM stopped. It gets two QMP monitors: ``qmp.sock`` for the app and
``ctl.sock`` for the sandbox's own control (guest writes, fault arming), because a QMP socket
serves one client at a time.

Drive ``i`` is device ``drive{i}`` on format node ``disk{i}``. A *failing* drive has blkdebug
between qcow2 and its file: after :meth:`Sandbox.arm_read_error` (a flush), its next read fails
once with EIO, as in QEMU's iotest 124.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from tui.core.base.errors import ConnectError
from tui.core.base.programs import QEMU_IMG

QEMU = "qemu-system-x86_64"
# Upper bound for one control-monitor command (guest writes of a few MiB take milliseconds).
CONTROL_TIMEOUT = 60.0
INSTALL_HINT = "sudo apt-get install -y qemu-system-x86 qemu-utils"


class SandboxError(ConnectError):
    """The sandbox QEMU could not be started or driven (there is no QEMU to talk to)."""


def qemu_available() -> str | None:
    """None when QEMU and qemu-img are installed, otherwise a one-line reason with the fix."""
    missing = [b for b in (QEMU, QEMU_IMG) if shutil.which(b) is None]
    if missing:
        return f"{' and '.join(missing)} not found; install QEMU with: {INSTALL_HINT}"
    return None


@dataclass
class Sandbox:
    """A scratch QEMU. Use ``async with Sandbox(...) as sb`` or ``start()``/``close()``."""

    drives: int = 2
    size: str = "64M"
    failing: Iterable[int] = ()
    workdir: Path | None = None
    keep_workdir: bool = False
    extra_args: list[str] = field(default_factory=list)
    persistent_images: bool = False

    def __post_init__(self) -> None:
        self._own_dir = self.workdir is None
        self.dir = Path(self.workdir or tempfile.mkdtemp(prefix="bitmap-tui-"))
        self.failing = frozenset(self.failing)
        self.proc: subprocess.Popen[bytes] | None = None
        self._ctl: QMPClient | None = None

    # ------------------------------------------------------------------ paths

    @property
    def socket(self) -> Path:
        """The QMP socket for the app."""
        return self.dir / "qmp.sock"

    @property
    def control_socket(self) -> Path:
        return self.dir / "ctl.sock"

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    def image(self, i: int) -> Path:
        return self.dir / f"drive{i}.qcow2"

    def path(self, name: str) -> Path:
        return self.dir / name

    # ------------------------------------------------------------------ lifecycle

    def _drive_arg(self, i: int) -> str:
        img = self.image(i)
        if i not in self.failing:
            return f"if=none,id=drive{i},node-name=disk{i},format=qcow2,file={img}"
        return (
            f"if=none,id=drive{i},node-name=disk{i},driver=qcow2,file.driver=blkdebug,"
            f"file.image.driver=file,file.image.filename={img},"
            "file.set-state.0.event=flush_to_disk,file.set-state.0.state=1,"
            "file.set-state.0.new_state=2,"
            "file.inject-error.0.event=read_aio,file.inject-error.0.errno=5,"
            "file.inject-error.0.state=2,file.inject-error.0.once=on,"
            "file.inject-error.0.immediately=off"
        )

    def create_images(self) -> None:
        for i in range(self.drives):
            if not self.image(i).exists():
                run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(self.image(i)), self.size])

    async def start(self) -> Sandbox:
        reason = qemu_available()
        if reason:
            raise SandboxError(reason)
        # After kill() the old control client is dead but not disconnected: its reader's EOFError
        # would otherwise surface as "exception was never retrieved" when it is collected.
        await self._close_control()
        self.dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.create_images)
        for s in (self.socket, self.control_socket):
            with contextlib.suppress(FileNotFoundError):
                s.unlink()
        args = [
            QEMU, "-M", "none", "-nodefaults", "-display", "none", "-S",
            "-qmp", f"unix:{self.socket},server=on,wait=off",
            "-qmp", f"unix:{self.control_socket},server=on,wait=off",
        ]
        for i in range(self.drives):
            args += ["-drive", self._drive_arg(i)]
        args += self.extra_args
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        for _ in range(500):
            if self.socket.exists() and self.control_socket.exists():
                break
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace")
                raise SandboxError(f"QEMU exited at start: {err.strip().splitlines()[-1:] or '?'}")
            await asyncio.sleep(0.01)
        else:
            raise SandboxError("QEMU did not create its QMP socket within 5 s")
        # The socket file appears at bind(), a moment before listen(): retry a refused connect.
        for attempt in range(100):
            self._ctl = QMPClient("sandbox-control")
            try:
                # Bounded: a QEMU that accepts but never greets must not hang the caller.
                await asyncio.wait_for(self._ctl.connect(str(self.control_socket)), CONTROL_TIMEOUT)
                break
            except TimeoutError:
                raise SandboxError("QEMU's control monitor did not greet within "
                                   f"{CONTROL_TIMEOUT:g} s") from None
            except Exception:
                if attempt == 99 or self.proc.poll() is not None:
                    raise
                await asyncio.sleep(0.02)
        return self

    async def __aenter__(self) -> Sandbox:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _close_control(self) -> None:
        if self._ctl is not None:
            # Bounded: a dead QEMU's half-closed socket must not hang the caller.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ctl.disconnect(), 5)
            self._ctl = None

    def kill(self) -> None:
        """SIGKILL QEMU (a crash): nothing is saved, persistent bitmaps are left in-use."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    async def stop(self) -> None:
        """Quit QEMU cleanly (persistent bitmaps are stored)."""
        if self.proc and self.proc.poll() is None and self._ctl is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ctl.execute("quit"), 5)
            try:
                await asyncio.to_thread(self.proc.wait, 5)
            except subprocess.TimeoutExpired:
                self.kill()
        await self._close_control()
        self.kill()

    async def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) QEMU and start it again on the same images and sockets."""
        if kill:
            self.kill()
            await self._close_control()
        else:
            await self.stop()
        await self.start()

    async def close(self) -> None:
        await self.stop()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        if self._own_dir and not self.keep_workdir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ control

    async def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run a command on the control monitor (not the app's)."""
        if self._ctl is None:
            raise SandboxError("sandbox QEMU is not running")
        try:
            # Bounded: a wedged QEMU must fail the caller (a test, the demo), not hang it.
            return await asyncio.wait_for(self._ctl.execute(command, arguments), CONTROL_TIMEOUT)
        except TimeoutError:
            raise SandboxError(
                f"QEMU did not answer '{command}' on its control monitor within {CONTROL_TIMEOUT:g} s"
            ) from None

    async def hmp(self, command_line: str) -> str:
        out = await self.qmp("human-monitor-command", {"command-line": command_line})
        text = str(out)
        if "error" in text.lower() or "failed" in text.lower():
            raise SandboxError(f"HMP '{command_line}': {text.strip()}")
        return text

    async def write(self, drive: int, offset: str | int, length: str | int, pattern: int = 0x11) -> None:
        """A guest write (HMP ``qemu-io``): dirties the drive's active bitmaps."""
        await self.hmp(f'qemu-io drive{drive} "write -P {pattern:#x} {offset} {length}"')

    async def arm_read_error(self, drive: int) -> None:
        """Make the failing drive's next read fail once with EIO (blkdebug, after a flush)."""
        if drive not in self.failing:
            raise SandboxError(f"drive{drive} was not started as a failing drive")
        await self.hmp(f'qemu-io drive{drive} "flush"')

    async def add_bitmap(self, drive: int, name: str, **options: Any) -> None:
        await self.qmp("block-dirty-bitmap-add", {"node": f"disk{drive}", "name": name, **options})


def _die_with_parent() -> None:
    """In the child before exec: a sandbox QEMU must not outlive the app that started it, even
    when the app is SIGKILLed and its cleanup never runs (Linux PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the normal cleanup paths still apply
        pass


def run(argv: list[str], *, timeout: float = 120) -> str:
    """Run a program with an argument list (never a shell) and return its stdout."""
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise SandboxError(f"{os.path.basename(argv[0])} failed: {msg[-1] if msg else res.returncode}")
    return res.stdout
