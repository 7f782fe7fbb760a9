"""Frame hooks: know when the app has produced a frame (headless), for latency benchmarks."""

from __future__ import annotations

import os
import time
from typing import Any

# First, as the app's entry points do: it sets Textual's paint rate before Textual loads.
import tui.ui  # noqa: F401

# isort: split
from textual.app import App
from textual.drivers.headless_driver import HeadlessDriver


class FrameRecorder:
    """Wraps ``app._display`` (where Textual hands a compositor update to the terminal): records
    when each frame was produced and calls ``on_frame(t)``. Headless apps skip turning the update
    into terminal output; the recorder does it, so a frame costs what it costs on a terminal."""

    def __init__(self, app: App[Any], on_frame: Any = None) -> None:
        self.app = app
        self.on_frame = on_frame
        self.frames = 0
        # The screen of the newest frame (a dialog's frame is drawn from the dialog's screen).
        self.last_screen: Any = None
        original = app._display

        def display(screen: Any, renderable: Any) -> None:
            original(screen, renderable)
            if renderable is None or app._batch_count:
                return
            render = getattr(renderable, "render_segments", None)
            if render is not None:
                render(app.console)
            self.frames += 1
            self.last_screen = screen
            if self.on_frame is not None:
                self.on_frame(time.monotonic())

        app._display = display  # type: ignore[method-assign]


class FirstFrameDriver(HeadlessDriver):
    """A terminal-less driver that still renders output; at the first frame it writes
    ``FIRST-FRAME <monotonic>`` to stderr (for ``startup``: console script to first frame)."""

    _done = False

    @property
    def is_headless(self) -> bool:
        return False  # so the app renders its frames to text as for a terminal

    def write(self, data: str) -> None:
        if not FirstFrameDriver._done and len(data) > 200:
            FirstFrameDriver._done = True
            os.write(2, f"FIRST-FRAME {time.monotonic()}\n".encode())
