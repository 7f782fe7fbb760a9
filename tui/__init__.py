"""bitmap-tui: a console for QEMU dirty bitmaps, backup transactions and block jobs."""

__version__ = "0.1.0"
