"""A real Linux guest with the real qemu-ga, for freeze tests (small: busybox + virtio modules).

The guest boots the host's kernel under TCG with an initramfs made here: it mounts its one disk
(``drive0``, an ext4 file system made on the host) at /data, starts qemu-ga on the virtio-serial
port, prints ``READY``, then loops writing 64 KiB files to /data (each write synced) and printing
``w N`` on the serial console after each. While the guest is frozen, those writes (and lines)
stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import gzip
import os
import shutil
import signal
import subprocess
from pathlib import Path

from qemu.qmp import QMPClient

BUSYBOX = "/bin/busybox"
QEMU_GA = "/usr/sbin/qemu-ga"
MODULES = ("virtio_pci", "virtio_blk", "virtio_console")

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /data
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
{insmods}
while [ ! -b /dev/vda ]; do sleep 0.1; done
mount -t ext4 /dev/vda /data
port=""
while [ -z "$port" ]; do
  for f in /sys/class/virtio-ports/*/name; do
    grep -q org.qemu.guest_agent.0 "$f" 2>/dev/null && port=$(basename $(dirname "$f"))
  done
  sleep 0.1
done
qemu-ga -m virtio-serial -p /dev/$port -t /tmp -f /tmp/qga.pid &
echo READY
i=0
while true; do
  i=$((i+1))
  dd if=/dev/urandom of=/data/f$((i % 8)) bs=64k count=1 conv=fsync 2>/dev/null
  echo "w $i"
  sleep 0.2
done
"""


def kernel() -> str | None:
    """A kernel version with both /boot/vmlinuz-V and its modules (None: none)."""
    for path in sorted(glob.glob("/boot/vmlinuz-*")):
        ver = path.removeprefix("/boot/vmlinuz-")
        if os.path.isdir(f"/lib/modules/{ver}"):
            return ver
    return None


def guest_missing() -> str | None:
    """Why the real guest cannot run here (None: it can)."""
    for tool in ("qemu-system-x86_64", "cpio", "mkfs.ext4", "modprobe"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is missing"
    if not os.access(BUSYBOX, os.X_OK) or not os.access(QEMU_GA, os.X_OK):
        return "busybox-static and qemu-guest-agent are needed"
    if kernel() is None:
        return "no kernel with modules in /boot (linux-image-cloud-amd64)"
    if not os.access(f"/boot/vmlinuz-{kernel()}", os.R_OK):
        return "the kernel is not readable"
    return None


def _copy(src: str, root: Path) -> None:
    dst = root / src.lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def build_initrd(workdir: Path) -> Path:
    """The guest's initramfs (gzip'd newc cpio)."""
    ver = kernel()
    root = workdir / "initrd-root"
    shutil.rmtree(root, ignore_errors=True)
    deps = subprocess.run(["modprobe", "-S", str(ver), "-a", "--show-depends", *MODULES],
                          capture_output=True, text=True, check=True).stdout.split("\n")
    mods: list[str] = []
    for line in deps:
        parts = line.split()
        if parts[:1] == ["insmod"] and parts[1] not in mods:
            mods.append(parts[1])
    for path in [BUSYBOX, QEMU_GA, *mods]:
        _copy(path, root)
    for line in subprocess.run(["ldd", QEMU_GA], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        lib = next((w for w in line.split() if w.startswith("/")), None)
        if lib:
            _copy(lib, root)
            real = os.path.realpath(lib)
            if real != lib:
                _copy(real, root)
    init = root / "init"
    init.write_text(INIT.format(insmods="\n".join(f"insmod {m}" for m in mods)))
    init.chmod(0o755)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root,
                             input="\n".join(files).encode(), capture_output=True, check=True)
    out = workdir / "initrd.gz"
    out.write_bytes(gzip.compress(archive.stdout, 1))
    return out


def make_data_disk(path: Path, size: str = "64M") -> None:
    """A qcow2 disk holding an empty ext4 file system."""
    raw = path.with_suffix(".raw")
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), size], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(raw)], check=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
                   check=True)
    raw.unlink()


class AgentGuest:
    """The guest: ``address`` (QMP for the app), ``agent`` (unix:qga.sock), ``disk``, ``qmp()``."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.disk = workdir / "data.qcow2"
        self.log = workdir / "serial.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._ctl: QMPClient | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.dir / 'qmp.sock'}"

    @property
    def agent(self) -> str:
        return f"unix:{self.dir / 'qga.sock'}"

    async def start(self, boot_timeout: float = 120) -> AgentGuest:
        self.dir.mkdir(parents=True, exist_ok=True)
        initrd = await asyncio.to_thread(build_initrd, self.dir)
        await asyncio.to_thread(make_data_disk, self.disk)
        ver = kernel()
        self.proc = subprocess.Popen([
            "qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-m", "256", "-nodefaults",
            "-display", "none", "-serial", f"file:{self.log}",
            "-kernel", f"/boot/vmlinuz-{ver}", "-initrd", str(initrd),
            "-append", "console=ttyS0 quiet panic=-1",
            "-drive", f"if=none,id=drive0,node-name=disk0,file={self.disk},format=qcow2",
            "-device", "virtio-blk-pci,drive=drive0",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,path={self.dir / 'qga.sock'},server=on,wait=off,id=qga0",
            "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            "-qmp", f"unix:{self.dir / 'qmp.sock'},server=on,wait=off",
            "-qmp", f"unix:{self.dir / 'ctl.sock'},server=on,wait=off",
        ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        loop = asyncio.get_running_loop()
        end = loop.time() + boot_timeout
        while self.writes() < 1:
            if self.proc.poll() is not None or loop.time() > end:
                raise RuntimeError(f"the guest did not start writing: {self.serial()[-500:]}")
            await asyncio.sleep(0.2)
        self._ctl = QMPClient("guest-control")
        await self._ctl.connect(str(self.dir / "ctl.sock"))
        return self

    def serial(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def writes(self) -> int:
        """How many /data writes the guest reported so far."""
        return sum(1 for line in self.serial().splitlines() if line.startswith("w "))

    async def qmp(self, command: str, arguments: dict | None = None):
        assert self._ctl is not None
        return await asyncio.wait_for(self._ctl.execute(command, arguments), 60)

    async def close(self) -> None:
        if self._ctl is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ctl.disconnect(), 5)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
