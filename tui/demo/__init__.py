"""The demo QEMU and the scratch sandbox it (and the tests) run QEMU in."""
