"""A real Linux guest for tests: a Debian kernel and a busybox initramfs that writes to its disk.

The guest boots under TCG in a few seconds. Its ``/init`` loads the virtio modules, then loops:
write a recognisable 64 KiB record at a pseudo-random 64 KiB-aligned offset of ``/dev/vda``,
``sync``, print one line on the serial console (``serial.log`` in the VM's directory). So its
disk changes all the time while backups run, as a real VM's does.

Needs the Debian packages ``linux-image-cloud-amd64 busybox-static cpio kmod``
(:func:`guest_unavailable` says what is missing). The initramfs is built once per test session
(:func:`initramfs`, cached in a temporary directory).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tui.demo.sandbox import Sandbox

BUSYBOX = "/bin/busybox"
MODULES = ("virtio_pci", "virtio_blk")
PACKAGES = "linux-image-cloud-amd64 busybox-static cpio kmod"
# Printed by /init once /dev/vda is there, then one line per record written.
READY = "bt-guest: ready"
RECORD = "bt-guest: wrote"

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod "/lib/modules/$m" || echo "bt-guest: insmod $m failed"; done
while [ ! -b /dev/vda ]; do sleep 0.1; done
slots=$(( $(cat /sys/block/vda/size) / 128 ))
echo "{ready} ($slots slots)"
i=0
seed=12345
while true; do
    i=$((i + 1))
    seed=$(( (seed * 1103515245 + 12345) % 2147483648 ))
    slot=$(( seed % slots ))
    yes "bt-guest record $i slot $slot" | head -c 65536 > /tmp/record
    dd if=/tmp/record of=/dev/vda bs=65536 seek=$slot count=1 conv=fsync 2>/dev/null
    sync
    echo "{record} $i at slot $slot"
done
"""


def kernel() -> tuple[str, str] | None:
    """(version, path) of the newest installed Debian kernel, or None."""
    found = sorted(glob.glob("/boot/vmlinuz-*"))
    if not found:
        return None
    path = found[-1]
    return os.path.basename(path).removeprefix("vmlinuz-"), path


def guest_unavailable() -> str | None:
    """None when a guest can be built here, else what is missing and how to install it."""
    missing = []
    if kernel() is None:
        missing.append("a kernel in /boot")
    for tool, path in (("busybox", BUSYBOX), ("cpio", shutil.which("cpio")),
                       ("modprobe", shutil.which("modprobe"))):
        if not path or not os.path.exists(path):
            missing.append(tool)
    if missing:
        return f"no {', '.join(missing)}; install with: apt-get install -y {PACKAGES}"
    return None


def module_files(version: str, names: tuple[str, ...] = MODULES) -> list[str]:
    """The ``.ko`` files ``names`` need, in load order, each once."""
    out = subprocess.run(["modprobe", "-S", version, "-a", "--show-depends", *names],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    files: list[str] = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "insmod" and parts[1] not in files:
            files.append(parts[1])
    return files


def build_initramfs(out: Path) -> Path:
    """Write ``out/initrd.gz``: busybox, the virtio modules and the writing ``/init``."""
    info = kernel()
    assert info is not None, guest_unavailable()
    version, _ = info
    root = out / "root"
    for sub in ("bin", "proc", "sys", "dev", "tmp", "lib/modules"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    order = []
    for ko in module_files(version):
        if not ko.endswith(".ko"):
            raise RuntimeError(f"{ko}: compressed modules are not handled (busybox insmod)")
        shutil.copy2(ko, root / "lib" / "modules" / os.path.basename(ko))
        order.append(os.path.basename(ko))
    (root / "modules.order").write_text("\n".join(order) + "\n")
    init = root / "init"
    init.write_text(INIT.format(ready=READY, record=RECORD))
    init.chmod(0o755)
    names = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True, timeout=60).stdout
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=names,
                             capture_output=True, check=True, timeout=60).stdout
    target = out / "initrd.gz"
    subprocess.run(["gzip", "-1"], input=archive, stdout=target.open("wb"), check=True, timeout=60)
    return target


_CACHE: dict[str, Path] = {}


def initramfs() -> Path:
    """The initramfs, built once per process (test session)."""
    if "initrd" not in _CACHE:
        _CACHE["initrd"] = build_initramfs(Path(tempfile.mkdtemp(prefix="bt-guest-")))
    return _CACHE["initrd"]


@dataclass
class GuestVM:
    """A booting guest on one qcow2 drive: drive0 on node disk0 (virtio-blk), the sandbox's two
    QMP monitors (``sb.address`` for the app, ``sb.qmp`` for the test's control)."""

    workdir: Path
    size: str = "64M"

    def __post_init__(self) -> None:
        info = kernel()
        assert info is not None, guest_unavailable()
        self.log = self.workdir / "serial.log"
        self.sandbox = Sandbox(drives=1, size=self.size, workdir=self.workdir, extra_args=[
            # After the sandbox's "-M none": the later machine type wins.
            "-M", "q35", "-accel", "tcg", "-m", "256",
            "-serial", f"file:{self.log}", "-kernel", info[1], "-initrd", str(initramfs()),
            "-append", "console=ttyS0 quiet panic=-1",
            "-device", "virtio-blk-pci,drive=drive0",
        ])

    async def start(self) -> Sandbox:
        """Start QEMU (paused, as every sandbox) and let the guest boot."""
        sb = await self.sandbox.start()
        await sb.qmp("cont")
        return sb

    def records(self) -> int:
        """How many records the guest has written so far."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count(RECORD)

    def ready(self) -> bool:
        try:
            return READY in self.log.read_text(errors="replace")
        except FileNotFoundError:
            return False
