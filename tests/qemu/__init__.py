"""The core and the command line against a real QEMU (qemu-system-x86_64, qemu-img, real guests),
headless; no console is opened."""
