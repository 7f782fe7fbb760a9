"""Fixtures of the service tests: the real ``bitmap-tui serve`` and throw-away unix users."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator

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
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI=true but the service tests cannot make unix users (not root?)")
        pytest.skip("making throw-away unix users needs root and useradd")
    with unix_users() as made:
        yield made
