"""Fixtures of every folder: real sandbox QEMUs, a connected Fleet, the fake QMP server, and a
private XDG directory for each test. A folder's own fixtures are in its conftest.py; helpers
that tests import are in ``tests/kit``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import hypothesis  # noqa: F401  (imported early: a lazy import at session end trips a CPython 3.11 AST bug)
import pytest

from tests.kit.fakeqmp import FakeQMP
from tui.core.qmp.address import parse_address
from tui.core.qmp.fleet import Endpoint, Fleet
from tui.demo.sandbox import Sandbox, qemu_available

# In CI a missing QEMU is an install bug, never a reason to skip.
if os.environ.get("CI") and qemu_available():
    raise RuntimeError(f"CI=true but {qemu_available()}")

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


