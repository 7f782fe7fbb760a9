"""The Textual console: app, screens, widgets, palette and themes (the only Textual importers)."""

import os

# Textual paints a screen on a timer of 1/TEXTUAL_FPS seconds (read once, when Textual is first
# imported). After a frame slower than that period the timer skips ahead one to two periods, so at
# Textual's default of 60 a 20 ms frame delays the next paint by up to 33 ms: under an event flood
# that wait was the largest part of an event's time to the screen (benchmarks/: ui_latency). The
# dashboard's redraw rate is capped by its StoreBridge (30 a second), so a faster timer only
# shortens the wait. An operator's own TEXTUAL_FPS wins.
os.environ.setdefault("TEXTUAL_FPS", "120")
