"""Shared fixtures: real sandbox QEMUs, a connected Fleet, and the fake QMP server."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import hypothesis  # noqa: F401  (imported early: a lazy import at session end trips a CPython 3.11 AST bug)
import pytest
import yaml

from tests.fakeqmp import FakeQMP
from tui.core.chains.policy import Policy
from tui.core.config import load_config
from tui.core.model.state import LinkState
from tui.core.qmp.address import parse_address
from tui.core.qmp.fleet import Endpoint, Fleet
from tui.demo.sandbox import Sandbox, qemu_available

# In CI a missing QEMU is an install bug, never a reason to skip.
if os.environ.get("CI") and qemu_available():
    raise RuntimeError(f"CI=true but {qemu_available()}")

requires_qemu = pytest.mark.skipif(qemu_available() is not None, reason=str(qemu_available()))


SandboxFactory = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def make_sandbox(tmp_path: Path) -> AsyncIterator[SandboxFactory]:
    """``await make_sandbox(drives=2, failing=[1])`` → a started :class:`Sandbox` in tmp_path."""
    boxes: list[Sandbox] = []

    async def make(**kwargs: object) -> Sandbox:
        d = tmp_path / f"qemu{len(boxes)}"
        sb = Sandbox(workdir=d, **kwargs)  # type: ignore[arg-type]
        boxes.append(sb)
        return await sb.start()

    yield make
    for sb in boxes:
        await sb.close()


@pytest.fixture
async def sandbox(make_sandbox: SandboxFactory) -> Sandbox:
    """A QEMU with two qcow2 drives (drive0/disk0, drive1/disk1)."""
    return await make_sandbox(drives=2)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (by polling the state, never by fixed sleeps) until predicate() holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def fleet_for() -> AsyncIterator[Callable[..., Awaitable[Fleet]]]:
    """``await fleet_for(sandbox_or_address, ...)`` → a started Fleet, connected and synced."""
    fleets: list[Fleet] = []

    async def make(*targets: object, read_only: bool = False, **kw: object) -> Fleet:
        fleet = Fleet(read_only=read_only, backoff_max=0.5, **kw)  # type: ignore[arg-type]
        for i, t in enumerate(targets):
            addr = t.address if isinstance(t, Sandbox) else str(t)
            fleet.add(Endpoint(f"vm{i}", parse_address(addr)))
        fleets.append(fleet)
        fleet.start()
        await fleet.wait_first_answer(10)
        return fleet

    yield make
    for f in fleets:
        await f.stop()


def connected(fleet: Fleet, name: str = "vm0") -> bool:
    return fleet.store.connection(name).state is LinkState.CONNECTED


@pytest.fixture
async def fake_qmp(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[FakeQMP]]]:
    servers: list[FakeQMP] = []

    async def make(**kw: object) -> FakeQMP:
        srv = FakeQMP(tmp_path / f"fake{len(servers)}.sock", **kw)  # type: ignore[arg-type]
        servers.append(srv)
        await srv.start()
        return srv

    yield make
    for s in servers:
        await s.stop()


@pytest.fixture(autouse=True)
def _isolated_xdg(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the user's config or themes, nor write to their state directory."""
    base = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "state"))


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch):
    """Local time is UTC for the test (snapshots with timestamps stay machine-independent)."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


def make_policy(name: str, settings: dict) -> Policy:
    """A policy as the config file would give it: through the config's validator (the only
    one), with its connection declared."""
    conn = settings.get("connection", "vm0")
    doc = {"connections": {conn: "unix:/nonexistent/qmp.sock"}, "policies": {name: settings}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(doc))
        return load_config(path).policies[name]
