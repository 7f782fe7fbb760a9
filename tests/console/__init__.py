"""The console: Textual's Pilot (``run_test``), snapshots (``snap_compare``, kept beside in
``__snapshots__/<module>/``) and the installed console in tmux; many of them on a real QEMU."""
