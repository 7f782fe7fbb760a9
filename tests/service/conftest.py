"""Fixtures of the service tests: the real ``bitmap-tui serve`` and throw-away unix users."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.kit.service import Served, UnixUsers, unix_users


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Served]]:
    """``await serve({"vm": address}).start("vm")`` → the service (stopped afterwards)."""
    made: list[Served] = []

    def make(connections: dict[str, str], **kw: object) -> Served:
        served = Served(connections, **kw)  # type: ignore[arg-type]
        made.append(served)
        return served

    yield make
    for served in made:
        served.stop()


@pytest.fixture
def users() -> Iterator[UnixUsers]:
    """Three throw-away users and a group (``useradd`` needs root: CI runs as root)."""
    problem = _why_no_users()
    if problem:
        if os.environ.get("CI"):
            raise RuntimeError(f"CI=true but {problem}")
        pytest.skip(problem)
    with unix_users() as made:
        yield made


def _why_no_users() -> str | None:
    """Why clients cannot run as other users here, or None."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        return "making throw-away unix users needs root and useradd"
    # Their processes run this interpreter: every directory above it must let others in (a
    # Python installed under root's 0700 home does not).
    for folder in Path(os.path.realpath(sys.executable)).parents:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return f"other users cannot run {sys.executable}: {folder} is closed to them"
    return None
