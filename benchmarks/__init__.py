"""Performance and scale benchmarks (not part of CI): ``python benchmarks/run.py [--quick] [--json]``."""
