"""Headless ``backup`` / ``chains`` / ``verify`` against a real QEMU, including a SIGKILLed run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

from tests.kit.chains import cli, reference
from tests.kit.common import make_policy, requires_qemu, wait_for
from tui.core.chains.plan import make_plan
from tui.core.chains.reconcile import reconcile, reconcile_on_connect
from tui.core.chains.verify import verify_chain
from tui.core.ledger.names import with_companions
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageState, JobState, TxnState

pytestmark = requires_qemu


async def names_on(sb, node):
    nodes = await sb.qmp("query-named-block-nodes")
    entry = next(n for n in nodes if n["node-name"] == node)
    return [b.get("name") for b in entry.get("dirty-bitmaps", [])]


def ledger_of(env) -> Ledger:
    return Ledger(os.path.join(env["XDG_STATE_HOME"], "bitmap-tui", "ledger.sqlite"))


async def test_backup_cli_json_text_and_errors(make_sandbox, setup):
    sb = await make_sandbox(drives=2)
    cfg, env = setup(sb)
    conn = ["--connect", f"vm0={sb.address}", "--config", str(cfg)]
    res = await asyncio.to_thread(cli, ["backup", "nightly", "--json", *conn], env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["refused"] is None and [d["kind"] for d in out["drives"]] == ["full", "full"]
    assert [d["state"] for d in out["drives"]] == ["valid", "valid"]
    assert all([await asyncio.to_thread(os.path.exists, d["path"]) for d in out["drives"]])

    await sb.write(0, 0, "1M")
    plan = await asyncio.to_thread(cli, ["backup", "nightly", "--plan", *conn], env)
    assert plan.returncode == 0, plan.stderr
    assert "drive0: incremental on drive0-full-1.qcow2 → drive0-incr-2.qcow2" in plan.stdout
    with ledger_of(env) as led:
        lid = led.ledger_id
    assert f"if drive1's job (bt.{lid}.2.1) fails:" in plan.stdout
    assert "image " + str(sb.dir) + "/drive1-incr-2.qcow2: INVALID (delete)" in plan.stdout
    text = await asyncio.to_thread(cli, ["backup", "nightly", *conn], env)
    assert text.returncode == 0, text.stderr
    assert "VALID" in text.stdout and "next incremental is based on drive0-" in text.stdout

    unknown = await asyncio.to_thread(cli, ["backup", "weekly", *conn], env)
    assert unknown.returncode == 2 and "no policy named 'weekly' (known: nightly, slow)" in unknown.stderr
    # --connect replaces the configured connections: the policy's one is then missing.
    noaddr = await asyncio.to_thread(cli, ["backup", "nightly", "--config", str(cfg),
                                           "--connect", f"other={sb.address}"], env)
    assert noaddr.returncode == 2 and "--connect vm0=ADDR" in noaddr.stderr
    bad = cfg.parent / "bad.yaml"
    bad.write_text(f"connections: {{vm0: {sb.address}}}\n"
                   "policies:\n  p: {connection: vm0, drives: [drive0], bitmap: b, target_dir: /x,"
                   " colour: red}\n")
    badres = await asyncio.to_thread(cli, ["backup", "p", "--config", str(bad)], env)
    assert badres.returncode == 2 and "policies.p.colour" in badres.stderr
    assert "bad.yaml:3" in badres.stderr and "Traceback" not in badres.stderr

    chains = await asyncio.to_thread(cli, ["chains", "--json", *conn], env)
    assert chains.returncode == 0, chains.stderr
    view = json.loads(chains.stdout)
    d0 = next(d for d in view["drives"] if d["drive"] == "drive0")
    assert [i["kind"] for i in d0["chain"]] == ["full", "incremental"]
    assert d0["next_base"] == d0["chain"][-1]["path"] and d0["bitmap_state"] == "active"
    assert all(i["size"] and i["size"] > 0 for i in d0["chain"])
    assert view["consistent_points"][0]["txn_id"] == 2

    # Bitmaps that are not ours are listed with their owner, never a problem with a fix.
    ours = f"bt.{lid}.nightly.c1"
    await sb.add_bitmap(1, "stray")
    await sb.add_bitmap(1, "pbs-incremental-dirty-bitmap")
    text = await asyncio.to_thread(cli, ["chains", *conn], env)
    assert "problem" not in text.stdout
    assert "bitmap disk1/stray: owner unknown (not ours)" in text.stdout
    assert "bitmap disk1/pbs-incremental-dirty-bitmap: owner Proxmox Backup Server (not ours)" \
        in text.stdout
    assert f"bitmap disk1/{ours}: owner policy nightly (drive1)" in text.stdout
    assert "next: incremental on drive0-incr-2.qcow2" in text.stdout
    ask = await asyncio.to_thread(cli, ["chains", "--fix", "1", "--yes", *conn], env)
    assert ask.returncode == 2 and "there is no problem 1" in ask.stderr
    # Ours: the chain's bitmap and its companions (tui.core.chains.identity).
    assert sorted(await names_on(sb, "disk1")) == sorted(
        ["pbs-incremental-dirty-bitmap", "stray", *with_companions({ours})])

    ver = await asyncio.to_thread(cli, ["verify", "--json"], env)
    assert ver.returncode == 0, ver.stdout
    assert json.loads(ver.stdout)["ok"] is True
    # Against the live disks (flushed, the VM is stopped): equal now...
    for i in (0, 1):
        await sb.hmp(f'qemu-io drive{i} "flush"')
    live = await asyncio.to_thread(cli, ["verify", "--live", "--json"], env)
    assert live.returncode == 0, live.stdout
    checks = [c for d in json.loads(live.stdout)["drives"] for c in d["checks"]]
    assert [c["what"] for c in checks].count("compare") == 2 and all(c["ok"] for c in checks)
    # ...and not after a guest write that no backup has: drive0 fails, drive1 passes.
    await sb.write(0, "40M", "64k", 0x99)
    await sb.hmp('qemu-io drive0 "flush"')
    stale = await asyncio.to_thread(cli, ["verify", "--live"], env)
    assert stale.returncode == 1
    assert "FAIL compare" in stale.stdout and "drive0-incr-2.qcow2" in stale.stdout
    assert "PASS compare" in stale.stdout


async def test_killed_app_mid_job_is_resolved_on_next_start(make_sandbox, fleet_for, setup):
    sb = await make_sandbox(drives=2)
    cfg, env = setup(sb)
    conn_args = ["--connect", f"vm0={sb.address}", "--config", str(cfg)]
    assert (await asyncio.to_thread(cli, ["backup", "nightly", *conn_args], env)).returncode == 0
    await sb.write(0, 0, "4M", 0x71)
    await sb.write(1, "8M", "4M", 0x72)

    proc = subprocess.Popen([sys.executable, "-m", "tui", "backup", "slow", *conn_args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = ledger_of(env)

        async def sent_and_running() -> bool:
            txns = probe.txns()
            if not txns or txns[-1].state is not TxnState.SENT:
                return False
            jobs = await sb.qmp("query-jobs")
            return any(j["type"] == "backup" and j["status"] == "running"
                       and j["current-progress"] > 0 for j in jobs)

        for _ in range(600):
            if await sent_and_running():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the slow run never got its jobs running")
        proc.send_signal(signal.SIGKILL)  # the app dies mid-job
        await asyncio.to_thread(proc.wait, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    txn = probe.txns()[-1]
    assert txn.state is TxnState.SENT
    assert {i.state for i in probe.images(txn_id=txn.id)} == {ImageState.PENDING}
    probe.close()

    # The app starts again: reconcile finds the jobs still running, then their outcome.
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = ledger_of(env)
    first = await reconcile(conn, ledger)
    assert sorted(first.running) == [ledger.job_id(txn.id, 0), ledger.job_id(txn.id, 1)]
    for job in first.running:
        await sb.qmp("block-job-set-speed", {"device": job, "speed": 0})
    done = await reconcile(conn, ledger, wait=True, timeout=60)
    assert set(done.resolved.values()) == {JobState.COMPLETED}
    imgs = ledger.images(txn_id=txn.id)
    assert {i.state for i in imgs} == {ImageState.VALID}
    assert ledger.txn(txn.id).state is TxnState.DONE
    assert not [n for n in conn.model.nodes if n.startswith("bt")]
    assert not [j for j in await conn.execute("query-jobs") if j["id"].startswith("bt")]
    for i, im in enumerate(sorted(imgs, key=lambda im: im.drive)):
        ref = await reference(sb, i, f"k-ref-{i}.qcow2")
        assert all(c.ok for c in verify_chain(ledger, im, reference=ref))
    ledger.close()


async def test_killed_app_and_restarted_qemu_leave_unknown_then_full(make_sandbox, fleet_for, setup):
    sb = await make_sandbox(drives=2)
    cfg, env = setup(sb, persistent=True)
    conn_args = ["--connect", f"vm0={sb.address}", "--config", str(cfg)]
    # Persistent bitmaps survive the restart, so only the unknown outcome forces the full.
    first = await asyncio.to_thread(cli, ["backup", "nightly", *conn_args], env)
    assert first.returncode == 0, first.stderr
    await sb.write(0, 0, "4M", 0x81)
    await sb.write(1, 0, "4M", 0x82)
    proc = subprocess.Popen([sys.executable, "-m", "tui", "backup", "slow", *conn_args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = ledger_of(env)
    try:
        await wait_for(lambda: len(probe.txns()) == 2 and probe.txns()[-1].state is TxnState.SENT,
                       timeout=60, what="second run sent")
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    await sb.restart()  # clean quit: the running jobs are cancelled and forgotten
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    rep = await reconcile(conn, probe)
    assert set(rep.resolved.values()) == {JobState.UNKNOWN}
    last = probe.txns()[-1]
    assert {i.state for i in probe.images(txn_id=last.id)} == {ImageState.UNKNOWN}
    assert conn.model.nodes["disk0"].bitmap(probe.chain_bitmap("nightly", 1)) is not None
    pol = make_policy("slow", {"connection": "vm0", "drives": ["drive0", "drive1"],
                                    "bitmap": "bm", "target_dir": str(sb.dir)})
    plan = make_plan(probe, conn.model, pol)
    assert [d.kind for d in plan.drives] == ["full", "full"]
    assert all("unknown" in d.reason for d in plan.drives)
    probe.close()


async def test_reconcile_on_reconnect_marks_lost_jobs_unknown(make_sandbox, fleet_for, tmp_path):
    from tui.core.chains.run import run_policy

    sb = await make_sandbox(drives=1)
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    ledger = Ledger(tmp_path / "l.sqlite")
    resolved: list[object] = []
    unsubscribe = reconcile_on_connect(conn, ledger, on_done=resolved.append)
    pol = make_policy("p", {"connection": "vm0", "drives": ["drive0"], "bitmap": "bm",
                                 "target_dir": str(sb.dir), "speed": 64 * 1024})
    task = asyncio.create_task(run_policy(conn, ledger, pol, timeout=60))
    await wait_for(lambda: any(j.status == "running" for j in conn.model.jobs.values()
                               if j.type == "backup"), timeout=30, what="backup job running")
    sb.kill()  # QEMU dies mid-job: the run ends with the job lost
    result = await task
    assert result.drives[0].state is ImageState.PENDING
    await sb.start()
    await wait_for(lambda: any(r.resolved for r in resolved), timeout=30, what="reconcile on reconnect")
    assert ledger.images()[0].state is ImageState.UNKNOWN
    assert ledger.txns()[0].state is TxnState.DONE
    unsubscribe()
    ledger.close()


def on_disk(*paths: str) -> list[bool]:
    """Do these files exist? (A plain function: quick, and not an os call inside a coroutine.)"""
    return [os.path.exists(p) for p in paths]


async def _forward_tcp_to(unix_path: str):
    """A loopback TCP port relaying to the sandbox's QMP socket: QEMU as seen over the network."""

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader, writer):
        ur, uw = await asyncio.open_unix_connection(unix_path)
        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_chains_fix_deletes_invalid_images_only_locally(make_sandbox, setup):
    sb = await make_sandbox(drives=2, failing=[1])
    cfg, env = setup(sb)
    conn = ["--connect", f"vm0={sb.address}", "--config", str(cfg)]
    first = await asyncio.to_thread(cli, ["backup", "nightly", *conn], env)
    assert first.returncode == 0, first.stderr
    await sb.write(1, 0, "1M")
    await sb.arm_read_error(1)
    failed = await asyncio.to_thread(cli, ["backup", "nightly", *conn], env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    bad = os.path.join(str(sb.dir), "drive1-incr-2.qcow2")
    keep = [os.path.join(str(sb.dir), n)
            for n in ("drive0-full-1.qcow2", "drive1-full-1.qcow2", "drive0-incr-2.qcow2")]
    assert on_disk(bad)[0]

    listing = await asyncio.to_thread(cli, ["chains", *conn], env)
    assert "problem 1 [invalid-images] vm0: drive1: 1 invalid/unknown image(s) left on disk: " \
           "drive1-incr-2.qcow2" in listing.stdout
    assert "fix: delete invalid image(s): drive1-incr-2.qcow2" in listing.stdout

    # Over TCP the QEMU host is another machine: only the paths are printed.
    server = await _forward_tcp_to(sb.address.removeprefix("unix:"))
    port = server.sockets[0].getsockname()[1]
    try:
        remote = await asyncio.to_thread(
            cli, ["chains", "--connect", f"vm0=tcp:127.0.0.1:{port}", "--config", str(cfg),
                  "--fix", "1", "--yes"], env)
    finally:
        server.close()
    assert remote.returncode == 2, remote.stdout + remote.stderr
    assert "remote QEMU: bitmap-tui cannot delete files there" in remote.stdout
    assert f"  {bad}" in remote.stdout.splitlines()
    assert on_disk(bad)[0]

    dry = await asyncio.to_thread(cli, ["chains", *conn, "--fix", "1"], env)
    assert dry.returncode == 2 and f"  {bad}" in dry.stdout.splitlines()
    assert "add --yes to delete them" in dry.stdout and on_disk(bad)[0]

    ro = await asyncio.to_thread(cli, ["--read-only", "chains", *conn, "--fix", "1", "--yes"], env)
    assert ro.returncode == 2 and "read-only: not deleting anything" in ro.stderr
    assert on_disk(bad)[0]

    done = await asyncio.to_thread(cli, ["chains", *conn, "--fix", "1", "--yes"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [f"deleted {bad}"]
    assert not on_disk(bad)[0] and all(on_disk(*keep))
    with ledger_of(env) as led:
        [row] = [i for i in led.images() if i.path == bad]
        assert row.state is ImageState.INVALID and row.deleted is not None
    after = await asyncio.to_thread(cli, ["chains", *conn], env)
    assert "problem" not in after.stdout, after.stdout
    [line] = [x for x in after.stdout.splitlines() if bad in x]
    assert "INVALID" in line and line.endswith("(deleted)")
