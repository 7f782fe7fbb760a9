"""The real ``bitmap-tui serve`` as a subprocess, a raw QMP client of its sockets, and
throw-away unix users (``useradd``) to run clients as."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.kit.common import wait_for

EXE = Path(sys.executable).parent / "bitmap-tui"
QMP_SHELL = Path(sys.executable).parent / "qmp-shell"


def shared_dir(prefix: str) -> Path:
    """A fresh directory every user may read and enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


class Served:
    """``bitmap-tui serve --config FILE`` for ``connections`` (name → address), its log, its
    sockets, its audit log."""

    def __init__(self, connections: dict[str, str], *, operators: list[str] | None = None,
                 viewers: list[str] | None = None, audit_log: str | None = None,
                 env: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        self.dir = shared_dir("bitmap-tui-serve-")
        self.sockets = self.dir / "run"
        self.audit_path = Path(audit_log) if audit_log else self.dir / "audit.jsonl"
        self.config = self.dir / "config.yaml"
        self.log = self.dir / "serve.log"
        self.env = env or {}
        self.extra = extra or {}
        self.write_config(connections, operators=operators or [], viewers=viewers or [])
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, connections: dict[str, str], *, operators: list[str],
                     viewers: list[str]) -> None:
        doc = {"connections": connections,
               "service": {"socket_dir": str(self.sockets), "audit_log": str(self.audit_path),
                           "operators": operators, "viewers": viewers}, **self.extra}
        self.config.write_text(yaml.safe_dump(doc))
        self.config.chmod(0o644)

    def socket(self, name: str) -> Path:
        return self.sockets / f"{name}.qmp"

    async def start(self, *names: str) -> Served:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([str(EXE), "serve", "--config", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env={**os.environ, **self.env})
        for name in names:
            await self.wait_log(f"{name}: connected to QEMU")
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_log(self, needle: str, timeout: float = 20.0, count: int = 1) -> None:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"bitmap-tui serve exited:\n{self.text()}")
            return self.text().count(needle) >= count
        await wait_for(seen, timeout, f"'{needle}' in the service's log:\n{self.text()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode if self.proc is not None else None


class RawClient:
    """A QMP client written by hand (a script): every byte it sends is chosen by the test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, path: Path) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 24)
        return cls(reader, writer)

    async def message(self, timeout: float = 10.0) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise EOFError("the service closed the connection")
        return json.loads(line)

    async def send(self, data: bytes | dict[str, Any]) -> None:
        self.writer.write(data if isinstance(data, bytes) else json.dumps(data).encode())
        await self.writer.drain()

    async def negotiate(self) -> dict[str, Any]:
        """Read the greeting, negotiate; the greeting."""
        greeting = await self.message()
        await self.send({"execute": "qmp_capabilities"})
        assert await self.message() == {"return": {}}
        return greeting

    async def execute(self, command: str, arguments: dict[str, Any] | None = None,
                      msg_id: Any = "t") -> dict[str, Any]:
        """A command's reply (events before it are skipped)."""
        msg: dict[str, Any] = {"execute": command, "id": msg_id}
        if arguments is not None:
            msg["arguments"] = arguments
        await self.send(msg)
        while "event" in (reply := await self.message()):
            pass
        return reply

    async def closed(self, timeout: float = 15.0) -> bool:
        """Whether the service closes the connection within ``timeout`` (what it sent before
        is read and dropped)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        if not await self.reader.read(1 << 16):
                            return True
                    except ConnectionError:
                        return True
        return False

    def close(self) -> None:
        self.writer.transport.abort()


@dataclass(frozen=True)
class UnixUsers:
    """Throw-away users: an operator (in ``group``), a viewer, a stranger."""

    group: str
    operator: str
    viewer: str
    stranger: str

    def uid(self, user: str) -> int:
        return pwd.getpwnam(user).pw_uid

    def run_as(self, user: str, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as ``user`` (with its groups), a private XDG directory of its own."""
        home = shared_dir(f"bitmap-tui-{user}-")
        os.chown(home, self.uid(user), -1)
        env = {"PATH": os.environ["PATH"], "XDG_CONFIG_HOME": str(home / "config"),
               "XDG_STATE_HOME": str(home / "state"), "HOME": str(home)}
        try:
            return subprocess.run(argv, user=user, group=pwd.getpwnam(user).pw_gid,
                                  extra_groups=os.getgrouplist(user, pwd.getpwnam(user).pw_gid),
                                  env=env, capture_output=True, text=True, timeout=60,
                                  check=False, **kw)
        finally:
            shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def unix_users() -> Iterator[UnixUsers]:
    """Make a group and three users with ``groupadd``/``useradd``; remove them afterwards."""
    tag = uuid.uuid4().hex[:6]
    users = UnixUsers(f"bto{tag}", f"btop{tag}", f"btvw{tag}", f"btst{tag}")
    subprocess.run(["groupadd", users.group], check=True)
    made: list[str] = []
    try:
        for name, groups in ((users.operator, [users.group]), (users.viewer, []),
                             (users.stranger, [])):
            extra = ["-G", ",".join(groups)] if groups else []
            subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", *extra, name], check=True)
            made.append(name)
        yield users
    finally:
        for name in made:
            subprocess.run(["userdel", name], check=False)
        with contextlib.suppress(KeyError):
            grp.getgrnam(users.group)
            subprocess.run(["groupdel", users.group], check=False)
