"""Fixtures of the service tests: the real ``bitmap-tui serve`` and throw-away unix users."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
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
    """Three throw-away users and a group (``useradd`` needs root: CI runs as root). Their
    processes run this interpreter and this checkout: a folder above them that is closed to
    other users (a Python installed under root's 0700 home) is opened for search (o+x, not for
    listing) while the test runs, and closed again."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        problem = "making throw-away unix users needs root and useradd"
        if os.environ.get("CI"):
            raise RuntimeError(f"CI=true but {problem}")
        pytest.skip(problem)
    with _searchable(_closed_folders()), unix_users() as made:
        yield made


def _closed_folders() -> list[Path]:
    """The folders above the interpreter and the checkout that other users cannot enter."""
    leaves = [Path(os.path.realpath(sys.executable)), Path(__file__).resolve(), Path(sys.prefix)]
    folders = {folder for leaf in leaves for folder in leaf.parents}
    return sorted(f for f in folders if not f.stat().st_mode & stat.S_IXOTH)


@contextmanager
def _searchable(folders: list[Path]) -> Iterator[None]:
    modes = {f: f.stat().st_mode for f in folders}
    try:
        for folder, mode in modes.items():
            os.chmod(folder, stat.S_IMODE(mode) | stat.S_IXOTH)
        yield
    finally:
        for folder, mode in modes.items():
            os.chmod(folder, stat.S_IMODE(mode))
