"""Remote transports against real servers: ssh:// through a local sshd, TLS against a QEMU whose QMP
chardev uses tls-creds, and the refusal of plaintext TCP to non-loopback hosts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

from tests.kit.common import requires_qemu, wait_for
from tests.kit.remote import Certs, LocalSSHD, free_port, qemu_tls_args, sshd_unavailable
from tui.core.model.state import LinkState
from tui.core.model.store import Store
from tui.core.qmp.address import parse_address
from tui.core.qmp.connection import Connection
from tui.core.qmp.fleet import Endpoint, Fleet
from tui.core.qmp.transport import make_opener, ssh_argv

requires_sshd = pytest.mark.skipif(
    sshd_unavailable() is not None and not os.environ.get("CI"), reason=str(sshd_unavailable())
)


# ------------------------------------------------------------------ helpers


async def connect_one(address: str, options: dict[str, Any] | None = None, **kw: Any) -> Fleet:
    fleet = Fleet(reconnect=kw.pop("reconnect", False), backoff_max=0.5, **kw)
    fleet.add(Endpoint("vm0", parse_address(address), dict(options or {})))
    fleet.start()
    await fleet.wait_first_answer(30)
    return fleet


def model(fleet: Fleet, name: str = "vm0") -> Any:
    return fleet.store.connection(name)


def one_line(text: str | None) -> str:
    assert text, "expected an error message"
    assert "\n" not in text and "Traceback" not in text
    return text


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui", *args], capture_output=True, text=True, timeout=90, check=False
    )


# ------------------------------------------------------------------ plaintext TCP guard


def test_ssh_argv_is_an_argument_list_with_safe_defaults() -> None:
    addr = parse_address("ssh://alice@example.org:2200/run/vm1.qmp")
    argv = ssh_argv(addr, "/tmp/x/qmp.sock", {"ssh_options": ["ConnectTimeout=5"]})
    assert argv[0] == "ssh" and "-N" in argv
    assert "ExitOnForwardFailure=yes" in argv and "BatchMode=yes" in argv
    assert not any("StrictHostKeyChecking" in a for a in argv)  # the user's policy stays in force
    assert argv[-2:] == ["--", "example.org"]  # a host can never be read as an option
    assert argv[argv.index("-L") + 1] == "/tmp/x/qmp.sock:/run/vm1.qmp"
    assert argv[argv.index("-p") + 1] == "2200" and argv[argv.index("-l") + 1] == "alice"
    assert argv[argv.index("ConnectTimeout=5") - 1] == "-o"
    # No port in the URL: none on the command line, so ~/.ssh/config's Port still applies.
    plain = ssh_argv(parse_address("ssh://build7/run/q.sock"), "/l.sock", {})
    assert "-p" not in plain and "-l" not in plain
    v6 = ssh_argv(parse_address("ssh://[::1]:2222/run/q.sock"), "/l.sock", {})
    assert v6[v6.index("-p") + 1] == "2222" and v6[-1] == "::1"


async def test_plaintext_tcp_to_remote_host_is_refused_without_touching_the_network() -> None:
    # 192.0.2.1 (TEST-NET-1) would hang until the timeout if anything tried to reach it.
    fleet = await connect_one("tcp:192.0.2.1:4444", connect_timeout=20)
    try:
        m = model(fleet)
        assert m.state is LinkState.FAILED
        assert one_line(m.error).startswith("refused plaintext TCP to 192.0.2.1:4444")
        assert "allow_insecure_tcp" in m.error
    finally:
        await fleet.stop()


async def test_allow_insecure_tcp_lets_the_connection_try() -> None:
    fleet = await connect_one("tcp:192.0.2.1:4444", {"allow_insecure_tcp": True}, connect_timeout=0.3)
    try:
        assert model(fleet).state is LinkState.FAILED
        assert "refused plaintext" not in (model(fleet).error or "")
    finally:
        await fleet.stop()


async def test_bad_transport_option_fails_that_connection_only(sandbox) -> None:
    fleet = Fleet(reconnect=False)
    fleet.add(Endpoint("bad", parse_address("tcp:127.0.0.1:1"), {"allow_insecure_tcp": "yes"}))
    fleet.add(Endpoint("good", parse_address(sandbox.address)))
    fleet.start()
    try:
        await fleet.wait_first_answer(30)
        assert one_line(model(fleet, "bad").error) == "option allow_insecure_tcp must be true or false"
        assert model(fleet, "good").state is LinkState.CONNECTED
    finally:
        await fleet.stop()


@requires_sshd
def test_ssh_that_cannot_reach_the_host_is_one_line() -> None:
    res = cli("status", "--timeout", "20", "--connect", "vm=ssh://nobody@127.0.0.1:1/run/x.qmp")
    assert res.returncode == 2 and res.stderr == ""
    assert res.stdout.strip() == (
        "vm (ssh://nobody@127.0.0.1:1/run/x.qmp): failed - "
        "ssh: connect to host 127.0.0.1 port 1: Connection refused"
    )


def test_cli_refuses_plaintext_remote_tcp_in_one_line() -> None:
    res = cli("status", "--connect", "tcp:192.0.2.1:4444", "--timeout", "20")
    assert res.returncode == 2
    assert "refused plaintext TCP" in res.stdout and "Traceback" not in res.stdout + res.stderr
    assert res.stderr == ""


@requires_qemu
async def test_plaintext_tcp_to_loopback_works(make_sandbox) -> None:
    port = free_port()
    sb = await make_sandbox(drives=1, extra_args=["-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"])
    await wait_for(lambda: _listening(port), what="QEMU's TCP monitor")
    fleet = await connect_one(f"tcp:127.0.0.1:{port}")
    try:
        assert model(fleet).state is LinkState.CONNECTED and "disk0" in model(fleet).nodes
    finally:
        await fleet.stop()
    assert sb


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------ TLS against a real QEMU


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs")).make()


async def tls_qemu(make_sandbox: Any, certs: Certs, *, verify_peer: bool) -> int:
    port = free_port()
    await make_sandbox(drives=1, extra_args=qemu_tls_args(certs, port, verify_peer=verify_peer))
    await wait_for(lambda: _listening(port), what="QEMU's TLS monitor")
    return port


@requires_qemu
async def test_tls_to_real_qemu_negotiates_and_runs_commands(make_sandbox, certs) -> None:
    port = await tls_qemu(make_sandbox, certs, verify_peer=False)
    fleet = await connect_one(f"tcp:127.0.0.1:{port}", {"tls_ca": str(certs.ca)}, command_timeout=10)
    try:
        assert model(fleet).state is LinkState.CONNECTED, model(fleet).error
        assert "disk0" in model(fleet).nodes
        # Every command is answered promptly (QEMU 7.2 would otherwise answer one command late).
        for i in range(3):
            await fleet["vm0"].execute("block-dirty-bitmap-add", {"node": "disk0", "name": f"b{i}"})
        assert {b.name for b in model(fleet).nodes["disk0"].bitmaps} == {"b0", "b1", "b2"}
    finally:
        await fleet.stop()


@requires_qemu
async def test_tls_without_the_nudge_stalls_on_qemu_7_2(make_sandbox, certs) -> None:
    """Why TLSNudgingQMPClient exists: a plain QMPClient never finishes negotiating."""
    port = await tls_qemu(make_sandbox, certs, verify_peer=False)
    store = Store()
    conn = Connection(
        "vm0", parse_address(f"tcp:127.0.0.1:{port}"), store, reconnect=False, connect_timeout=1.5,
        opener=make_opener({"tls_ca": str(certs.ca)}), client_factory=QMPClient,
    )
    conn.start()
    await asyncio.wait_for(conn.attempted.wait(), 30)
    await conn.stop()
    assert store.connection("vm0").state is LinkState.FAILED
    assert store.connection("vm0").error == "timed out: the server did not answer"


@requires_qemu
async def test_tls_client_certificate_with_verify_peer(make_sandbox, certs) -> None:
    port = await tls_qemu(make_sandbox, certs, verify_peer=True)
    opts = {"tls_ca": str(certs.ca), "tls_cert": str(certs.dir / "client-cert.pem"),
            "tls_key": str(certs.dir / "client-key.pem")}
    fleet = await connect_one(f"tcp:127.0.0.1:{port}", opts)
    try:
        assert model(fleet).state is LinkState.CONNECTED, model(fleet).error
    finally:
        await fleet.stop()
    # Without a client certificate QEMU refuses the handshake: one line, no hang.
    fleet = await connect_one(f"tcp:127.0.0.1:{port}", {"tls_ca": str(certs.ca)}, connect_timeout=5)
    try:
        assert model(fleet).state is LinkState.FAILED
        one_line(model(fleet).error)
    finally:
        await fleet.stop()


@requires_qemu
async def test_tls_server_signed_by_another_ca_is_refused(make_sandbox, certs) -> None:
    port = await tls_qemu(make_sandbox, certs, verify_peer=False)
    fleet = await connect_one(f"tcp:127.0.0.1:{port}", {"tls_ca": str(certs.other_ca())})
    try:
        assert model(fleet).state is LinkState.FAILED
        assert one_line(model(fleet).error).startswith("TLS error: CERTIFICATE_VERIFY_FAILED")
    finally:
        await fleet.stop()


async def test_tls_missing_ca_file_is_one_line(tmp_path: Path) -> None:
    fleet = await connect_one("tcp:127.0.0.1:1", {"tls_ca": str(tmp_path / "nope.pem")})
    try:
        assert one_line(model(fleet).error) == f"tls_ca: no such file: {tmp_path / 'nope.pem'}"
    finally:
        await fleet.stop()


@requires_qemu
async def test_cli_status_over_tls(make_sandbox, certs) -> None:
    port = await tls_qemu(make_sandbox, certs, verify_peer=False)
    res = await asyncio.to_thread(
        cli, "status", "--json", "--connect", f"tcp:127.0.0.1:{port}", "--tls-ca", str(certs.ca)
    )
    assert res.returncode == 0, res.stdout + res.stderr
    conn = json.loads(res.stdout)["connections"][0]
    assert conn["state"] == "connected" and conn["nodes"][0]["node_name"] == "disk0"


# ------------------------------------------------------------------ SSH through a local sshd


@pytest.fixture
def sshd(tmp_path: Path):
    daemon = LocalSSHD(tmp_path / "sshd").start()
    yield daemon
    daemon.stop()


class Recording:
    """An opener that remembers what it opened (to check the tunnel is cleaned up)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.inner = make_opener(options)
        self.targets: list[str] = []

    async def __call__(self, address: Any) -> Any:
        target, ssl, cleanup = await self.inner(address)
        self.targets.append(target)
        return target, ssl, cleanup


def gone(path: str) -> bool:
    return not os.path.exists(path)


def ssh_pids(local_socket: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", local_socket], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


@requires_qemu
@requires_sshd
async def test_ssh_tunnel_connects_runs_commands_and_cleans_up(sandbox, sshd) -> None:
    store = Store()
    opener = Recording({"ssh_config": str(sshd.config)})
    conn = Connection("vm0", parse_address(sshd.url(sandbox.socket)), store, reconnect=False,
                      connect_timeout=20, opener=opener)
    conn.start()
    try:
        await asyncio.wait_for(conn.attempted.wait(), 40)
        assert store.connection("vm0").state is LinkState.CONNECTED, store.connection("vm0").error
        await conn.execute("block-dirty-bitmap-add", {"node": "disk1", "name": "over-ssh"})
        assert store.connection("vm0").nodes["disk1"].bitmap("over-ssh") is not None
        local = opener.targets[0]
        assert oct(os.stat(os.path.dirname(local)).st_mode & 0o777) == "0o700"
        assert ssh_pids(local)
    finally:
        await conn.stop()
    assert gone(os.path.dirname(local))
    await wait_for(lambda: not ssh_pids(local), what="ssh to exit")


@requires_qemu
@requires_sshd
async def test_ssh_changed_host_key_is_refused(sandbox, sshd) -> None:
    sshd.pretend_host_key_changed()
    fleet = await connect_one(sshd.url(sandbox.socket), {"ssh_config": str(sshd.config)},
                              connect_timeout=20)
    try:
        m = model(fleet)
        assert m.state is LinkState.FAILED
        assert one_line(m.error).startswith("ssh refused: the host key of 127.0.0.1 has changed")
    finally:
        await fleet.stop()


@requires_sshd
async def test_ssh_unknown_user_key_fails_in_one_line(tmp_path, sshd) -> None:
    (sshd.dir / "authorized_keys").write_text("")
    fleet = await connect_one(sshd.url("/nowhere.sock"), {"ssh_config": str(sshd.config)},
                              connect_timeout=20)
    try:
        assert model(fleet).state is LinkState.FAILED
        assert "Permission denied" in one_line(model(fleet).error)
    finally:
        await fleet.stop()


@requires_qemu
@requires_sshd
async def test_ssh_tunnel_killed_reconnects(sandbox, sshd) -> None:
    opener = Recording({"ssh_config": str(sshd.config)})
    store = Store()
    conn = Connection("vm0", parse_address(sshd.url(sandbox.socket)), store, connect_timeout=20,
                      opener=opener, backoff_max=0.5)
    conn.start()
    try:
        await wait_for(lambda: store.connection("vm0").state is LinkState.CONNECTED, 40, "connect")
        seen: list[tuple[LinkState, str | None]] = []
        store.subscribe(lambda: seen.append((store.connection("vm0").state,
                                             store.connection("vm0").error)))
        pids = ssh_pids(opener.targets[0])
        assert pids, "the ssh process behind the tunnel"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # Recorded from the store, so a quick reconnect cannot hide the loss from the test.
        await wait_for(lambda: any(s is LinkState.DISCONNECTED for s, _ in seen), 30, "loss")
        lost = [e for s, e in seen if s is LinkState.DISCONNECTED][0]
        assert one_line(lost).startswith("connection lost")
        await wait_for(lambda: len(opener.targets) >= 2
                       and store.connection("vm0").state is LinkState.CONNECTED, 40, "reconnect")
        assert len(opener.targets) >= 2 and opener.targets[0] != opener.targets[-1]
        assert gone(os.path.dirname(opener.targets[0]))
    finally:
        await conn.stop()


@requires_qemu
@requires_sshd
async def test_cli_status_over_ssh(sandbox, sshd) -> None:
    res = await asyncio.to_thread(
        cli, "status", "--json", "--timeout", "20", "--connect", sshd.url(sandbox.socket),
        "--ssh-config", str(sshd.config),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    conn = json.loads(res.stdout)["connections"][0]
    assert conn["state"] == "connected" and {n["node_name"] for n in conn["nodes"]} == {"disk0", "disk1"}
