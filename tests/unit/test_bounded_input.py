"""Bad input is refused in bounded time and memory, with one short line: an alias bomb in a
config value, an endless or huge file, an absurd field width in a name pattern."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tui.core.base.errors import ConfigError
from tui.core.base.limits import TEXT_FILE_MAX_BYTES
from tui.core.chains.policy import render_name
from tui.core.config import load_config
from tui.core.txn.files import load as load_transaction

CONN = "connections:\n  vm0: {address: unix:/run/vm/q.sock}\n"


def alias_bomb(levels: int = 9) -> str:
    """Nested anchors, each repeating the one before nine times: 9**levels strings."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n    ".join(lines)


def bomb_config() -> str:
    # The bomb inside one value: the key expects a string and gets a list of lists.
    return CONN + "defaults:\n  audit_log:\n    " + alias_bomb() + "\n"


def limited_run(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """The installed command in a subprocess with its address space capped at ~250 MB, so a
    regression fails here (MemoryError, a kill) instead of filling the machine."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (250 * 2**20, 250 * 2**20))
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tui", *args], capture_output=True, text=True,
                          timeout=60, env=env, preexec_fn=cap)
    return proc, time.monotonic() - start


def test_alias_bomb_in_a_config_value_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(bomb_config())
    start = time.monotonic()
    with pytest.raises(ConfigError, match="aliases expand it past") as err:
        load_config(path)
    assert time.monotonic() - start < 1.0
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_aliases_within_the_bound_still_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("connections:\n  vm0: &c {address: unix:/run/vm/a.sock}\n  vm1: *c\n")
    assert [c.name for c in load_config(path).connections] == ["vm0", "vm1"]


def test_alias_that_holds_itself_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONN + "defaults:\n  audit_log: &a [*a]\n")
    with pytest.raises(ConfigError, match="refers to the value that holds it"):
        load_config(path)


def test_a_wrong_value_is_shown_short(tmp_path):
    # Within the alias bound, a list of 90,000 strings where a string belongs: the message
    # shows a few of them, not all.
    path = tmp_path / "c.yaml"
    path.write_text(CONN + "defaults:\n  audit_log:\n    " + alias_bomb(4) + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert len(str(err.value)) < 400, str(err.value)


def test_alias_bomb_in_a_transaction_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("actions:\n  - " + alias_bomb() + "\n")
    with pytest.raises(ConfigError, match="aliases expand it past"):
        load_transaction(path)


def test_huge_files_are_not_read_whole(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * TEXT_FILE_MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_config(big)
    with pytest.raises(ConfigError, match="larger than"):
        load_transaction(big)
    with pytest.raises(ConfigError, match="larger than"):
        load_config("/dev/zero")


@pytest.mark.parametrize("args", [
    ["status", "--json", "-c", "unix:/nonexistent.sock", "--config", "{bomb}"],
    ["chains", "--config", "{bomb}"],
    ["status", "-c", "unix:/nonexistent.sock", "--config", "/dev/zero"],
])
def test_commands_refuse_bad_config_in_bounded_memory(tmp_path, args):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(bomb_config())
    proc, took = limited_run([a.replace("{bomb}", str(bomb)) for a in args], tmp_path)
    assert proc.returncode not in (0, -9), proc.stderr
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr[-2000:]
    out = (proc.stdout + proc.stderr).strip()
    assert len(out) < 2000 and ("expand it past" in out or "larger than" in out), out
    assert took < 10


def test_absurd_field_width_in_a_pattern(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONN + "policies:\n  p: {connection: vm0, drives: [drive0], bitmap: bm, "
                    "target_dir: /b, pattern: '{n:400000000}.qcow2'}\n")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="field width or precision past 255"):
        load_config(path)
    with pytest.raises(ConfigError, match="field width or precision past 255"):
        render_name("{n:400000000}.qcow2", n=1, drive="d", vm="v", policy="p", txn="t")
    assert time.monotonic() - start < 1.0
    assert render_name("{n:04}.qcow2", n=7) == "0007.qcow2"
