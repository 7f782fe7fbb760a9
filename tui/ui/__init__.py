"""The Textual console: app, screens, widgets, palette and themes (the only Textual importers)."""

import os

# Textual paints a screen on a timer of 1/TEXTUAL_FPS seconds (read once, when Textual is first
# imported), paused while nothing needs painting. After a frame slower than that period the timer
# skips ahead one to two periods, so at Textual's default of 60 a 20 ms frame delayed the next
# paint by up to 33 ms; at 120 a key after a full-screen frame still waited 8-16 ms (benchmarks/:
# ui_latency, key_latency). The dashboard's redraws are capped by its StoreBridge (30 a second)
# and the app starts no animations, so a faster timer only shortens those waits (Textual's own
# scroll animations, e.g. the mouse wheel, run at this rate too). An operator's TEXTUAL_FPS wins.
os.environ.setdefault("TEXTUAL_FPS", "240")
