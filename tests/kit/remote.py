"""Test support for remote transports: a private sshd on 127.0.0.1 and openssl-made certificates.

Everything is started with argument lists (never a shell) inside a test's tmp_path.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(argv: list[str]) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {res.stderr.strip()}")


def sshd_unavailable() -> str | None:
    """Why a local sshd cannot be started here, or None."""
    if not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("ssh-keygen")):
        return "OpenSSH (openssh-server, openssh-client) is not installed"
    if os.geteuid() != 0:
        return "a test sshd needs root (privilege separation)"
    return None


def keygen(path: Path) -> str:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)])
    return Path(f"{path}.pub").read_text().strip()


@dataclass
class LocalSSHD:
    """An sshd on 127.0.0.1 with its own host key, authorized key and a client config file."""

    dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalSSHD:
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        self.host_pub = keygen(d / "host_key")
        client_pub = keygen(d / "client_key")
        (d / "authorized_keys").write_text(client_pub + "\n")
        self.port = free_port()
        (d / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nAllowStreamLocalForwarding yes\n"
            f"PidFile {d / 'sshd.pid'}\nLogLevel ERROR\n"
        )
        self.write_known_hosts(self.host_pub)
        (d / "ssh_config").write_text(
            "Host *\n"
            f"  IdentityFile {d / 'client_key'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {d / 'known_hosts'}\n  GlobalKnownHostsFile /dev/null\n"
            "  UpdateHostKeys no\n"
        )
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"sshd exited: {err.strip()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("sshd did not listen within 15 s")

    @property
    def config(self) -> Path:
        return self.dir / "ssh_config"

    def write_known_hosts(self, host_pub: str) -> None:
        keytype, key = host_pub.split()[:2]
        (self.dir / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {keytype} {key}\n")

    def pretend_host_key_changed(self) -> None:
        """Put a different key for this host into known_hosts (what a MITM or reinstall looks like)."""
        other = keygen(self.dir / f"other_key_{time.monotonic_ns()}")
        self.write_known_hosts(other)

    def url(self, remote_socket: Path | str, user: str = "root") -> str:
        return f"ssh://{user}@127.0.0.1:{self.port}{remote_socket}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()


@dataclass
class Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""

    dir: Path

    def make(self) -> Certs:
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run(["openssl", "req", "-x509", *ec, "-keyout", str(d / "ca-key.pem"),
             "-out", str(d / "ca-cert.pem"), "-days", "2", "-subj", "/CN=bitmap-tui test CA"])
        for who, cn, san in (("server", "127.0.0.1", "IP:127.0.0.1"), ("client", "client", "DNS:client")):
            run(["openssl", "req", *ec, "-keyout", str(d / f"{who}-key.pem"),
                 "-out", str(d / f"{who}.csr"), "-subj", f"/CN={cn}", "-addext", f"subjectAltName={san}"])
            run(["openssl", "x509", "-req", "-in", str(d / f"{who}.csr"), "-CA", str(d / "ca-cert.pem"),
                 "-CAkey", str(d / "ca-key.pem"), "-CAcreateserial", "-days", "2",
                 "-copy_extensions", "copyall", "-out", str(d / f"{who}-cert.pem")])
        return self

    @property
    def ca(self) -> Path:
        return self.dir / "ca-cert.pem"

    def other_ca(self) -> Path:
        """A CA that did not sign the server's certificate."""
        other = Certs(self.dir / "other")
        other.dir.mkdir(exist_ok=True)
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(other.dir / "ca-key.pem"), "-out", str(other.dir / "ca-cert.pem"),
             "-days", "2", "-subj", "/CN=someone else"])
        return other.dir / "ca-cert.pem"


def qemu_tls_args(certs: Certs, port: int, *, verify_peer: bool) -> list[str]:
    """QEMU arguments for a QMP monitor on 127.0.0.1:PORT over TLS (docs/qmp-facts.md, "QMP over TLS")."""
    return [
        "-object",
        f"tls-creds-x509,id=tls0,dir={certs.dir},endpoint=server,verify-peer={'on' if verify_peer else 'off'}",
        "-chardev",
        f"socket,id=montls,host=127.0.0.1,port={port},server=on,wait=off,tls-creds=tls0",
        "-mon", "chardev=montls,mode=control",
    ]
