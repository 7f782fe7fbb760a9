"""Tests that need neither QEMU nor a running console: the core's logic, the config, the
reducer, parsing, fake QMP servers and agents, the layer contracts."""
