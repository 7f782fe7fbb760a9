"""One backup run per VM at a time, across processes: two ``bitmap-tui backup`` started together
on one QEMU through two QMP monitors; ``--wait``; a SIGKILLed holder taken over."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess

from tests.kit.chains import reference, same
from tests.kit.common import requires_qemu, wait_for
from tests.kit.txn import EXE
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageState

pytestmark = requires_qemu


async def two_monitors(make_sandbox, tmp_path):
    """A QEMU with a second app monitor (``qmp2.sock``): its address too."""
    second = tmp_path / "qmp2.sock"
    sb = await make_sandbox(drives=2, extra_args=["-qmp", f"unix:{second},server=on,wait=off"])
    return sb, f"unix:{second}"


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([EXE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


async def ended(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = await asyncio.to_thread(proc.communicate, timeout=timeout)
    return proc.returncode, out, err


def ledger_of(env) -> Ledger:
    return Ledger(os.path.join(env["XDG_STATE_HOME"], "bitmap-tui", "ledger.sqlite"))


async def unthrottle(sb) -> None:
    """Let the speed-limited jobs that are running finish now (through the control monitor)."""
    for job in await sb.qmp("query-block-jobs"):
        await sb.qmp("block-job-set-speed", {"device": job["device"], "speed": 0})


async def slow_run_holding(sb, env, args) -> subprocess.Popen[str]:
    """A ``backup slow`` whose jobs are running (it holds the lock)."""
    await sb.write(0, 0, "4M", 0x31)
    await sb.write(1, 0, "4M", 0x32)
    proc = start(["backup", "slow", *args], env)
    probe = ledger_of(env)

    async def running() -> bool:
        return probe.run_lock("vm0") is not None and bool(await sb.qmp("query-block-jobs"))

    for _ in range(1200):
        if await running():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the slow run never got its jobs running")
    probe.close()
    return proc


async def test_two_runs_through_two_monitors_one_refused(make_sandbox, setup, tmp_path):
    sb, second = await two_monitors(make_sandbox, tmp_path)
    cfg, env = setup(sb)
    base = ["--config", str(cfg)]
    first = await asyncio.to_thread(subprocess.run, [EXE, "backup", "nightly", *base], env=env,
                                    capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    await sb.write(0, 0, "4M", 0x21)
    await sb.write(1, "8M", "4M", 0x22)
    one = start(["backup", "slow", "--json", *base, "--connect", f"vm0={sb.address}"], env)
    two = start(["backup", "slow", "--json", *base, "--connect", f"vm0={second}"], env)
    # Whichever lost refuses at once; the other's speed-limited jobs are still running then.
    await wait_for(lambda: one.poll() is not None or two.poll() is not None, timeout=60,
                   what="one of the two runs to end")
    loser, winner = (one, two) if one.poll() is not None else (two, one)
    assert winner.poll() is None
    code, _, err = await ended(loser)
    assert code == 2, err
    refusal = f"by pid {winner.pid} on {socket.gethostname()}"
    assert "vm0 is being backed up by policy slow, started " in err and refusal in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    await unthrottle(sb)
    code, out, err = await ended(winner)
    assert code == 0, err
    assert [d["state"] for d in json.loads(out)["drives"]] == ["valid", "valid"]
    with ledger_of(env) as ledger:
        assert len(ledger.txns()) == 2  # the first full and the winner's: the loser sent nothing
        paths = [im.path for im in ledger.images()]
        assert len(paths) == len(set(paths)) == 4
        assert ledger.run_lock("vm0") is None
        top = [im for im in ledger.images() if im.kind == "incremental"]
        assert {im.state for im in top} == {ImageState.VALID}
    for i in (0, 1):
        ref = await reference(sb, i, f"ref-{i}.qcow2")
        img = next(im.path for im in top if im.drive == f"drive{i}")
        assert same(img, ref).returncode == 0


async def test_wait_waits_then_runs(make_sandbox, setup, tmp_path):
    sb, second = await two_monitors(make_sandbox, tmp_path)
    cfg, env = setup(sb)
    holder = await slow_run_holding(sb, env, ["--config", str(cfg)])
    waiter = start(["backup", "nightly", "--wait", "120", "--config", str(cfg), "--connect",
                    f"vm0={second}"], env)
    await asyncio.sleep(2)
    assert waiter.poll() is None  # still waiting for the slow run
    await unthrottle(sb)
    code, _, err = await ended(holder)
    assert code == 0, err
    code, out, err = await ended(waiter)
    assert code == 0, err
    assert out.count("VALID") == 2
    with ledger_of(env) as ledger:
        slow, nightly = ledger.txns()
        assert nightly.created >= slow.ended


async def test_killed_holder_is_taken_over(make_sandbox, setup, tmp_path):
    sb, second = await two_monitors(make_sandbox, tmp_path)
    cfg, env = setup(sb)
    holder = await slow_run_holding(sb, env, ["--config", str(cfg)])
    holder.send_signal(signal.SIGKILL)
    await ended(holder)
    with ledger_of(env) as ledger:
        assert ledger.run_lock("vm0").pid == holder.pid  # left behind by the dead run
    await unthrottle(sb)
    code, out, err = await ended(start(["backup", "nightly", "--config", str(cfg), "--connect",
                                        f"vm0={second}"], env))
    assert code == 0, err
    assert (f"took over vm0's run lock from policy slow (pid {holder.pid} on "
            f"{socket.gethostname()}: that process is gone)") in err
    assert out.count("VALID") == 2


async def test_prune_and_restore_take_the_same_lock(make_sandbox, setup, tmp_path):
    sb = await make_sandbox(drives=2)
    cfg, env = setup(sb, keep={"last": 5})
    base = ["--config", str(cfg)]
    assert (await ended(start(["backup", "nightly", *base], env)))[0] == 0
    holder = await slow_run_holding(sb, env, base)
    busy = "vm0 is being backed up by policy slow, started "
    code, _, err = await ended(start(["prune", "nightly", *base], env))
    assert code == 2 and busy in err, err
    target = tmp_path / "restored.qcow2"
    restore = ["restore", "nightly", "drive0", "--point", "1", "--to", str(target), *base]
    code, _, err = await ended(start(restore, env))
    assert code == 2 and busy in err and not target.exists(), err
    waiting = start([*restore, "--wait", "120"], env)
    await unthrottle(sb)
    assert (await ended(holder))[0] == 0
    code, _, err = await ended(waiting)
    assert code == 0 and target.exists(), err
